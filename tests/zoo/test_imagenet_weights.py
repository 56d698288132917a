"""`weights="imagenet"` end to end: timm itself downloads a checkpoint with random weights
from a fake Hugging Face Hub on loopback (tests/zoo/fake_hub.py) into the Hugging Face
cache, as `pretrained=True` does for a timm user; `zoo.load` must find it there (no second
download), convert it, and with its preprocessing give timm's own pipeline's top-5 on a
photograph."""

import io

import numpy as np
import pytest

import zoo
from tests.zoo.fake_hub import FakeHub, use_fake_hub
from zoo import registry


def test_every_timm_architecture_has_imagenet_weights_from_the_hub():
    with_timm = {name for name, spec in registry.all_specs().items() if spec.timm_name}
    assert with_timm == {
        "resnet50",
        "seresnet50",
        "seresnext50_32x4d",
        "ecaresnet50d",
        "gcresnet50t",
        "botnet26t_256",
        "halonet26t",
        "lambda_resnet26t",
    }
    for name in with_timm:
        entry = registry.get_spec(name).weights_for("imagenet")
        checkpoint = entry.source.removeprefix("timm/")
        assert checkpoint.split(".")[0] == registry.get_spec(name).timm_name
        assert entry.url == f"hf://timm/{checkpoint}/model.safetensors"
        assert entry.revision == "main"
        assert entry.num_classes == 1000 and entry.file_format == "safetensors"


@pytest.mark.oracle
@pytest.mark.slow
def test_imagenet_tag_reuses_timms_download_and_gives_timms_top5(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm", reason="needs the `oracle` extra")
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image")
    import torch
    from PIL import Image
    from safetensors.torch import save
    from timm.data import create_transform, resolve_data_config

    checkpoint = registry.get_spec("seresnet50").weights_for("imagenet").source  # timm/...
    random_model = timm.create_model(checkpoint.removeprefix("timm/"), pretrained=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, tensor in random_model.state_dict().items():
            if tensor.is_floating_point():
                if key.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    data = save({k: v.contiguous() for k, v in random_model.state_dict().items()})
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buffer, format="JPEG", quality=90)
    photo = buffer.getvalue()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with FakeHub({(checkpoint, "model.safetensors"): data}) as hub:
        use_fake_hub(monkeypatch, hub, tmp_path / "hf_cache")
        # timm's own pipeline: pretrained weights from the hub, its eval transform
        reference = timm.create_model(checkpoint.removeprefix("timm/"), pretrained=True).eval()
        assert len(hub.downloads()) == 1
        transform = create_transform(**resolve_data_config(model=reference))
        with torch.no_grad(), Image.open(io.BytesIO(photo)) as image:
            expected = torch.softmax(reference(transform(image.convert("RGB"))[None]), -1).numpy()
        model = zoo.load("seresnet50", weights="imagenet")
        assert len(hub.downloads()) == 1  # found in the Hugging Face cache timm filled
    got = model.predict(model.preprocessing.load([io.BytesIO(photo)]), verbose=0)
    top5 = np.argsort(-expected[0])[:5]
    assert np.argsort(-got[0])[:5].tolist() == top5.tolist()
    assert expected[0, top5[-1]] > 1e-3  # the ranking is not decided by rounding noise
    np.testing.assert_allclose(got[0, top5], expected[0, top5], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
