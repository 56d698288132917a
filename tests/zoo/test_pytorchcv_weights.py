"""pytorchcv's ImageNet checkpoints (CBAM-ResNet-50, BAM-ResNet-50): the converters of
zoo/convert/pytorchcv.py, the zip + SHA-1 download path over loopback HTTP, and the
registry entries.

Fixtures: tests/fixtures/zoo/pytorchcv_{cbam,bam}_tiny.{pth,npz}, reduced-depth pytorchcv
networks with random weights and their logits (tools/make_pytorchcv_fixtures.py, torch
2.14.1, pytorchcv 0.0.74). The oracle tests build pytorchcv's full models live.
"""

import dataclasses
import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

import zoo
from tools.make_pytorchcv_fixtures import CASES, FIXTURES
from zoo import registry
from zoo.convert.pytorchcv import load_pytorchcv_state_dict
from zoo.convert.torch_pickle import load_state_dict
from zoo.weights import WeightsError

RTOL = 1e-4


def _fixture(case_id):
    with np.load(FIXTURES / f"{case_id}.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    return FIXTURES / f"{case_id}.pth", arrays, json.loads(str(arrays["config"]))


def _assert_logits_close(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", sorted(CASES))
def test_fixture_converts_to_pytorchcv_logits(case_id):
    path, arrays, config = _fixture(case_id)
    x = arrays["input"]
    model = zoo.build(
        config["model"],
        input_shape=x.shape[1:],
        num_classes=arrays["logits"].shape[-1],
        classifier_activation=None,
        **config["kwargs"],
    )
    load_pytorchcv_state_dict(model, load_state_dict(path), config["model"])
    _assert_logits_close(model.predict(x, verbose=0), arrays["logits"])


def test_default_cbam_build_refuses_pytorchcv_weights():
    """The default (timm) CBAM has no MLP bias and stacks [mean, max]: the converter names
    the mismatch instead of loading a wrong kernel order."""
    path, arrays, config = _fixture("pytorchcv_cbam_tiny")
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "attention_kwargs"}
    model = zoo.build(
        "cbam_resnet50", input_shape=arrays["input"].shape[1:], num_classes=10, **kwargs
    )
    with pytest.raises(ValueError, match="has biases; the layer has use_bias=False"):
        load_pytorchcv_state_dict(model, load_state_dict(path), "cbam_resnet50")
    kwargs["attention_kwargs"] = {"use_bias": True, "pooling_order": "mean_max"}
    model = zoo.build(
        "cbam_resnet50", input_shape=arrays["input"].shape[1:], num_classes=10, **kwargs
    )
    with pytest.raises(ValueError, match=r"stacks \[max, mean\].*pooling_order='mean_max'"):
        load_pytorchcv_state_dict(model, load_state_dict(path), "cbam_resnet50")


def test_checkpoint_of_another_depth_names_the_first_missing_weight():
    path, arrays, config = _fixture("pytorchcv_bam_tiny")
    kwargs = {**config["kwargs"], "layers": (1, 1, 2, 1)}
    model = zoo.build(
        "bam_resnet50", input_shape=arrays["input"].shape[1:], num_classes=10, **kwargs
    )
    with pytest.raises(ValueError, match=r"weight 'features\.stage1\.unit2\.res_unit\.body"):
        load_pytorchcv_state_dict(model, load_state_dict(path), "bam_resnet50")


# -- the download path over loopback HTTP ----------------------------------------------


def _serve_release(root, case_id, members=None):
    """pytorchcv's release layout: `<file>.pth.zip` holding `<file>.pth`."""
    checkpoint = (FIXTURES / f"{case_id}.pth").read_bytes()
    name = f"{case_id}-0000-{hashlib.sha1(checkpoint).hexdigest()[:8]}.pth"
    with zipfile.ZipFile(root / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in (members or {name: checkpoint}).items():
            archive.writestr(member, data)
    return name, hashlib.sha1(checkpoint).hexdigest()


def _register_release(monkeypatch, case_id, url, sha1, tag="imagenet"):
    """The real registry entry `tag` of the case's model, pointed at the loopback release
    and the reduced architecture of the fixture."""
    _, arrays, config = _fixture(case_id)
    spec = registry.get_spec(config["model"])
    real = spec.weights_for(tag)
    size = tuple(arrays["input"].shape[1:3])
    weights = dataclasses.replace(
        real,
        url=url,
        sha1=sha1,
        num_classes=arrays["logits"].shape[-1],
        input_size=size,
        preprocessing=real.preprocessing.with_size(size),
        architecture={**real.architecture, **config["kwargs"]},
    )
    monkeypatch.setitem(
        registry._REGISTRY, spec.name, dataclasses.replace(spec, weights=(weights,))
    )
    return config["model"], arrays


@pytest.mark.slow
@pytest.mark.parametrize("case_id", sorted(CASES))
def test_tag_downloads_zip_verifies_sha1_converts_and_caches(
    monkeypatch, keras_home, http_root, case_id
):
    root, base, requests = http_root
    name, sha1 = _serve_release(root, case_id)
    model_name, arrays = _register_release(monkeypatch, case_id, f"{base}/{name}.zip", sha1)
    model = zoo.load(model_name, weights="imagenet", classifier_activation=None)
    _assert_logits_close(model.predict(arrays["input"], verbose=0), arrays["logits"])
    assert requests == [f"/{name}.zip"]
    size = "x".join(str(d) for d in arrays["input"].shape[1:3])
    assert sorted(p.name for p in keras_home.iterdir()) == sorted(
        [f"{model_name}.imagenet.{name}", f"{model_name}.imagenet.{size}.weights.h5"]
    )
    assert (keras_home / f"{model_name}.imagenet.{name}").read_bytes() == (
        FIXTURES / f"{case_id}.pth"
    ).read_bytes()
    # the conversion is reused: no second download
    zoo.load(model_name, weights="imagenet")
    assert requests == [f"/{name}.zip"]


def test_wrong_sha1_leaves_nothing_in_the_cache(monkeypatch, keras_home, http_root):
    root, base, requests = http_root
    name, sha1 = _serve_release(root, "pytorchcv_cbam_tiny")
    wrong = "0" * 40
    model_name, _ = _register_release(
        monkeypatch, "pytorchcv_cbam_tiny", f"{base}/{name}.zip", wrong
    )
    with pytest.raises(WeightsError, match=f"sha1 mismatch .*expected {wrong}, got {sha1}"):
        zoo.load(model_name, weights="imagenet")
    assert requests == [f"/{name}.zip"]
    assert list(keras_home.iterdir()) == []


def test_archive_without_a_single_checkpoint_is_refused(monkeypatch, keras_home, http_root):
    root, base, _ = http_root
    checkpoint = (FIXTURES / "pytorchcv_cbam_tiny.pth").read_bytes()
    name, sha1 = _serve_release(
        root, "pytorchcv_cbam_tiny", members={"a.pth": checkpoint, "b.pth": checkpoint}
    )
    model_name, _ = _register_release(
        monkeypatch, "pytorchcv_cbam_tiny", f"{base}/{name}.zip", sha1
    )
    with pytest.raises(WeightsError, match=r"exactly one \.pth checkpoint; it holds \['a.pth'"):
        zoo.load(model_name, weights="imagenet")
    assert list(keras_home.iterdir()) == []


def test_corrupt_archive_is_a_clear_error(monkeypatch, keras_home, http_root):
    root, base, _ = http_root
    name, sha1 = _serve_release(root, "pytorchcv_cbam_tiny")
    data = (root / f"{name}.zip").read_bytes()
    (root / f"{name}.zip").write_bytes(data[: len(data) // 3])
    model_name, _ = _register_release(
        monkeypatch, "pytorchcv_cbam_tiny", f"{base}/{name}.zip", sha1
    )
    with pytest.raises(WeightsError, match="is not a readable zip archive"):
        zoo.load(model_name, weights="imagenet")
    assert list(keras_home.iterdir()) == []


def test_release_with_a_malicious_pickle_runs_nothing(monkeypatch, keras_home, http_root, tmp_path):
    """A checkpoint whose unpickling would run a command, served with its true SHA-1 (a
    compromised release): the load fails naming the global and the command never runs."""
    import os
    import pickle

    root, base, _ = http_root
    marker = tmp_path / "pwned"

    class RunsCommand:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"conv1.weight": RunsCommand()}))
    checkpoint = evil.getvalue()
    name = "evil-0000-00000000.pth"
    with zipfile.ZipFile(root / f"{name}.zip", "w") as archive:
        archive.writestr(name, checkpoint)
    model_name, _ = _register_release(
        monkeypatch,
        "pytorchcv_cbam_tiny",
        f"{base}/{name}.zip",
        hashlib.sha1(checkpoint).hexdigest(),
    )
    with pytest.raises(WeightsError, match=r"refers to posix\.system.*refusing"):
        zoo.load(model_name, weights="imagenet")
    assert not marker.exists()
    assert not any(p.name.endswith(".weights.h5") for p in keras_home.iterdir())


# -- registry entries ----------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["cbam_resnet50", "bam_resnet50"])
def test_registry_entries(model_name):
    spec = zoo.model_info(model_name).weights_for("imagenet")
    assert spec.file_format == "pytorchcv" and spec.num_classes == 1000
    assert spec.url.endswith(f"-{spec.sha1[:8]}.pth.zip")
    preprocessing = zoo.model_info(model_name).preprocessing("imagenet")
    assert preprocessing.scale_size == (256, 256) and preprocessing.interpolation == "bilinear"


@pytest.mark.oracle
@pytest.mark.parametrize("model_name", ["cbam_resnet50", "bam_resnet50"])
def test_registry_entries_match_pytorchcv_records(model_name):
    from pytorchcv.models.common import model_store

    error, sha1, release = model_store.get_model_name_suffix_data(model_name)
    spec = zoo.model_info(model_name).weights_for("imagenet")
    assert spec.sha1 == sha1
    assert spec.url == (
        f"{model_store.imgclsmob_repo_url}/releases/download/{release}/"
        f"{model_name}-{error}-{sha1[:8]}.pth.zip"
    )
    assert f"top-5 error {int(error) / 100}%" in spec.metric
    rows = {
        row[0]: row for row in model_store.load_csv(model_store.get_model_metainfos_file_path())
    }
    _, _, _, _, _, _, _, dataset, size, scale, _, _ = rows[model_name]
    assert (dataset, int(size), float(scale)) == ("in1k", 224, spec.preprocessing.crop_pct)
    assert spec.input_size == (224, 224)


# -- live oracle: pytorchcv's own full-size models ---------------------------------------------


@pytest.mark.oracle
@pytest.mark.slow
@pytest.mark.parametrize(
    "model_name, zip_format", [("cbam_resnet50", True), ("bam_resnet50", False)]
)
def test_full_model_matches_pytorchcv_through_the_download_path(
    tmp_path, monkeypatch, keras_home, model_name, zip_format
):
    """pytorchcv's `get_model(name, pretrained=False)`, every parameter and BN statistic
    randomised, `torch.save`d (the zip format, or the legacy one of files saved before
    PyTorch 1.6) and zipped like a release, loaded by tag through `file://`
    (the registry's architecture entry applies) and compared at 224 x 224 (its fixed 7x7
    final pool needs that size)."""
    import torch
    from pytorchcv.model_provider import get_model

    from tools.make_pytorchcv_fixtures import randomize

    net = randomize(get_model(model_name, pretrained=False), seed=3)
    checkpoint = tmp_path / f"{model_name}-0000-test.pth"
    torch.save(net.state_dict(), checkpoint, _use_new_zipfile_serialization=zip_format)
    with zipfile.ZipFile(tmp_path / f"{checkpoint.name}.zip", "w") as archive:
        archive.write(checkpoint, checkpoint.name)
    spec = registry.get_spec(model_name)
    weights = dataclasses.replace(
        spec.weights_for("imagenet"),
        url=(tmp_path / f"{checkpoint.name}.zip").as_uri(),
        sha1=hashlib.sha1(checkpoint.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(
        registry._REGISTRY, model_name, dataclasses.replace(spec, weights=(weights,))
    )
    x = np.random.default_rng(4).normal(size=(2, 224, 224, 3)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = zoo.load(model_name, weights="imagenet", classifier_activation=None)
    _assert_logits_close(model.predict(x, verbose=0), expected)


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_info_shows_source_sha1_architecture_and_metric(capsys):
    from zoo.cli import main

    assert main(["info", "cbam_resnet50"]) == 0
    out = capsys.readouterr().out
    spec = zoo.model_info("cbam_resnet50").weights_for("imagenet")
    assert "weights 'imagenet' (default for predict / export): pytorchcv/cbam_resnet50" in out
    assert f"sha1 {spec.sha1}; input (224, 224)" in out
    assert (
        "architecture: attention_kwargs={'use_bias': True, 'pooling_order': 'max_mean', "
        "'divisor': None}"
    ) in out
    assert "metric: top-1 79.83% / top-5 94.95% at 224, crop 0.875" in out


@pytest.mark.slow
def test_cli_predict_loads_the_release_over_http(
    monkeypatch, keras_home, http_root, tmp_path, capsys
):
    from PIL import Image

    from zoo.cli import main

    root, base, requests = http_root
    name, sha1 = _serve_release(root, "pytorchcv_bam_tiny")
    model_name, arrays = _register_release(
        monkeypatch, "pytorchcv_bam_tiny", f"{base}/{name}.zip", sha1
    )
    image = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (90, 80, 3), dtype=np.uint8)).save(
        image
    )
    assert main(["predict", model_name, str(image), "--weights", "imagenet", "--top", "2"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    model = zoo.load(model_name, weights="imagenet")
    scores = model.predict(model.preprocessing.load([str(image)]), verbose=0)[0]
    best = np.argsort(-scores)[:2]
    assert printed == f"{image}: " + ", ".join(f"class {i} {scores[i]:.3f}" for i in best)
    assert requests == [f"/{name}.zip"]
