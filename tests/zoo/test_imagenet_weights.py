"""`weights="imagenet"` end to end: the registry's Hugging Face URL is swapped for a loopback
server holding a timm checkpoint with random weights, and `zoo.load` (download, hash check,
numpy conversion, cache, fresh process-free reload) must give timm's logits."""

import dataclasses
import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest

import zoo
from zoo import registry


def test_every_timm_architecture_has_imagenet_weights_from_the_hub():
    with_timm = {name for name, spec in registry.all_specs().items() if spec.timm_name}
    assert with_timm == {"resnet50", "seresnet50", "seresnext50_32x4d", "ecaresnet50d",
                         "gcresnet50t", "botnet26t_256", "halonet26t", "lambda_resnet26t"}
    for name in with_timm:
        entry = registry.get_spec(name).weights_for("imagenet")
        checkpoint = entry.source.removeprefix("timm/")
        assert checkpoint.split(".")[0] == registry.get_spec(name).timm_name
        assert entry.url == f"https://huggingface.co/timm/{checkpoint}/resolve/main/model.safetensors"
        assert entry.num_classes == 1000 and entry.file_format == "safetensors"


@pytest.mark.oracle
def test_seresnet50_imagenet_tag_gives_timm_logits(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm", reason="needs the `oracle` extra")
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = timm.create_model("seresnet50", pretrained=False).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, tensor in reference.state_dict().items():
            if tensor.is_floating_point():
                if key.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    root = tmp_path / "www"
    root.mkdir()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
              str(root / "model.safetensors"))
    digest = hashlib.sha256((root / "model.safetensors").read_bytes()).hexdigest()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = registry.get_spec("seresnet50")
        entry = dataclasses.replace(
            spec.weights_for("imagenet"), sha256=digest,
            url=f"http://127.0.0.1:{server.server_address[1]}/model.safetensors")
        monkeypatch.setitem(registry._REGISTRY, "seresnet50",
                            dataclasses.replace(spec, weights=(entry,)))
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        images = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype("float32")
        with torch.no_grad():
            expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        model = zoo.load("seresnet50", weights="imagenet", classifier_activation=None)
        first = model.predict(images, verbose=0)
        server.shutdown()  # the second load must come from the cache
        cached = zoo.load("seresnet50", weights="imagenet", classifier_activation=None)
        second = cached.predict(images, verbose=0)
    finally:
        server.shutdown()
        server.server_close()
    scale = np.abs(expected).max()
    assert np.abs(first - expected).max() / scale < 1e-4
    np.testing.assert_array_equal(first, second)
