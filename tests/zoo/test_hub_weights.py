"""`hf://` weights through `huggingface_hub`: the Hugging Face cache timm fills is reused,
`HF_HUB_OFFLINE` works, the offline error names the file, the sha256 is checked. A fake
hub on loopback HTTP (tests/zoo/fake_hub.py) stands in for huggingface.co."""

import dataclasses
import hashlib

import numpy as np
import pytest
from safetensors.numpy import save

import zoo
from tests.zoo.fake_hub import FakeHub, use_fake_hub
from tests.zoo.test_load import NAME, _numpy_forward, _register, _spec, _state
from zoo.registry import WeightsSpec
from zoo.weights import WeightsError, fetch

REPO, FILE = "timm/tiny_test_net.fake_in1k", "model.safetensors"
DATA = save(_state())
SHA256 = hashlib.sha256(DATA).hexdigest()


def _hub_spec(sha256=SHA256, filename=FILE):
    return WeightsSpec(
        tag="imagenet",
        url=f"hf://{REPO}/{filename}",
        file_format="safetensors",
        sha256=sha256,
        input_size=(9, 11),
        num_classes=5,
        trained_on="random",
        metric="none (test fixture)",
    )


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub({(REPO, FILE): DATA}) as server:
        use_fake_hub(monkeypatch, server, tmp_path / "hf_cache")
        yield server


def test_downloads_once_into_the_hugging_face_cache(hub, tmp_path):
    path = fetch(NAME, _hub_spec())
    assert path.read_bytes() == DATA
    repo_cache = tmp_path / "hf_cache" / "models--timm--tiny_test_net.fake_in1k"
    assert str(path).startswith(str(repo_cache))
    assert hub.downloads() == [f"/{REPO}/resolve/main/{FILE}"]
    assert fetch(NAME, _hub_spec()) == path
    assert len(hub.downloads()) == 1


def test_a_timm_users_cached_file_is_used_offline_without_requests(hub, monkeypatch):
    import huggingface_hub.constants

    # what timm's pretrained=True does (timm.models._hub.load_state_dict_from_hf)
    cached = huggingface_hub.hf_hub_download(REPO, FILE)
    hub.requests.clear()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert fetch(NAME, _hub_spec()).read_bytes() == DATA
    assert str(fetch(NAME, _hub_spec())) == cached
    assert hub.file_requests() == []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    fetch(NAME, _hub_spec())
    assert hub.downloads() == []  # online: at most a HEAD to check the revision


def test_offline_without_the_file_names_what_to_fetch(hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as error:
        fetch(NAME, _hub_spec())
    message = str(error.value)
    assert "\n" not in message
    assert f"{FILE} of {REPO} at revision main is not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert f"hf download {REPO} {FILE} --revision main" in message
    assert hub.file_requests() == []


def test_unreachable_hub_without_the_file_says_so(monkeypatch, tmp_path):
    with FakeHub({}) as server:
        use_fake_hub(monkeypatch, server, tmp_path / "hf_cache")
    # the server is closed now: nothing listens on its port. huggingface_hub retries with
    # backoff (about 24 s); skip its waits
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)
    with pytest.raises(
        WeightsError, match="is not in the Hugging Face cache .* and the Hub could not be reached"
    ):
        fetch(NAME, _hub_spec())


def test_sha256_mismatch_is_refused_and_the_file_removed(hub):
    with pytest.raises(
        WeightsError,
        match=f"sha256 mismatch for {FILE} of {REPO} at "
        f"revision main: expected 0+, got {SHA256}; the "
        f"file was removed",
    ):
        fetch(NAME, _hub_spec(sha256="0" * 64))
    assert fetch(NAME, _hub_spec()).read_bytes() == DATA
    assert len(hub.downloads()) == 2  # the bad copy was not reused


def test_a_file_missing_on_the_hub_is_one_line(hub):
    with pytest.raises(WeightsError) as error:
        fetch(NAME, _hub_spec(filename="absent.safetensors"))
    assert str(error.value).startswith(
        f"could not download {NAME} weights 'imagenet' "
        f"(absent.safetensors of {REPO} at revision main): "
    )
    assert "\n" not in str(error.value)


def test_bad_hub_url_is_refused(hub):
    with pytest.raises(WeightsError, match="is not of the form hf://<owner>/<repo>/<file>"):
        fetch(NAME, dataclasses.replace(_hub_spec(), url="hf://timm/model.safetensors"))


def test_zoo_load_converts_the_hub_checkpoint(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    _register(monkeypatch, [_spec("imagenet", f"hf://{REPO}/{FILE}", SHA256)])
    model = zoo.load(NAME, weights="imagenet", classifier_activation=None)
    x = np.random.default_rng(1).normal(size=(2, 9, 11, 3)).astype("float32")
    expected, _ = _numpy_forward(_state(), x)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert len(hub.downloads()) == 1


@pytest.mark.slow
def test_hf_hub_offline_environment_variable_in_a_fresh_process(hub, tmp_path):
    """HF_HUB_OFFLINE / HF_HUB_CACHE as a user sets them, before huggingface_hub is imported."""
    import os
    import subprocess
    import sys

    import huggingface_hub.constants

    huggingface_hub.hf_hub_download(REPO, FILE)  # a timm user's cache
    hub.requests.clear()
    script = (
        "import dataclasses, sys\n"
        "from zoo.registry import WeightsSpec\n"
        "from zoo.weights import WeightsError, fetch\n"
        f"spec = WeightsSpec(tag='imagenet', url='hf://{REPO}/{FILE}', "
        f"file_format='safetensors', sha256='{SHA256}', input_size=(9, 11), num_classes=5, "
        "trained_on='', metric='')\n"
        "print(fetch('net', spec))\n"
        "try:\n"
        "    fetch('net', dataclasses.replace(spec, url='hf://timm/absent/model.safetensors'))\n"
        "except WeightsError as error:\n"
        "    print(error)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hf_cache"),
        "HF_ENDPOINT": hub.url,
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    found, error = result.stdout.strip().splitlines()
    assert open(found, "rb").read() == DATA
    assert error.startswith(
        "net weights 'imagenet': model.safetensors of timm/absent at "
        "revision main is not in the Hugging Face cache"
    )
    assert "HF_HUB_OFFLINE is set" in error
    assert hub.requests == []
