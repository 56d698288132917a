"""Dilated ResNets (`output_stride` 16 and 8, zoo/backbones/resnet.py), the backbones of the
segmentation models: the stride-32 checkpoints load into them unchanged.

Default run: reduced timm ResNets built with timm's `output_stride` and committed as
fixtures (tools/make_resnet_fixtures.py, cases `*_os8_*` / `*_os16_*`; their logits are
also checked by tests/zoo/test_resnet.py) load through `zoo.load` and reproduce timm's
logits. Under the `oracle` marker: the full ResNet-50 at output stride 8 and 16 against
live timm (`timm.create_model("resnet50", output_stride=...)`), random weights, H != W.
"""

import keras
import pytest

import zoo
from tests.zoo.test_resnet import MAX_RELATIVE_ERROR, fixture, relative_error, to_numpy
from tools.make_resnet_fixtures import FIXTURES


@pytest.mark.parametrize(
    ("output_stride", "expected"),
    [
        (32, {"stage1": (16, 12), "stage2": (8, 6), "stage3": (4, 3), "stage4": (2, 2)}),
        (16, {"stage1": (16, 12), "stage2": (8, 6), "stage3": (4, 3), "stage4": (4, 3)}),
        (8, {"stage1": (16, 12), "stage2": (8, 6), "stage3": (8, 6), "stage4": (8, 6)}),
    ],
)
def test_output_stride_keeps_the_resolution_of_the_last_stages(output_stride, expected):
    model = zoo.build(
        "resnet50",
        features_only=True,
        input_shape=(64, 48, 3),
        layers=(1, 1, 2, 2),
        channels=(4, 8, 8, 8),
        output_stride=output_stride,
    )
    shapes = {key: tuple(value.shape[1:3]) for key, value in model.output.items() if key != "stem"}
    assert shapes == expected
    rates = {
        layer.name: layer.dilation_rate[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)
    }
    # timm: a stage's first block dilates by the previous stage's rate, the others by its own
    first, second = {32: (1, 1), 16: (1, 2), 8: (2, 4)}[output_stride]
    assert rates["layer3-0-conv2"] == 1 and rates["layer3-1-conv2"] == (1 if first == 1 else 2)
    assert rates["layer4-0-conv2"] == first and rates["layer4-1-conv2"] == second


@pytest.mark.parametrize("case_id", ["resnet_eca_d_os8_tiny", "resnet_basic_os16_tiny"])
def test_zoo_load_converts_a_timm_checkpoint_into_the_dilated_network(case_id, keras_home):
    _, arrays, config = fixture(case_id)
    height, width = arrays["input"].shape[1:3]
    model = zoo.load(
        config["model"],
        weights=FIXTURES / f"{case_id}.safetensors",
        input_shape=(height, width, 3),
        classifier_activation=None,
        **config["body_kwargs"],
    )
    assert model.get_layer("fc").kernel.shape[-1] == config["num_classes"]
    logits = to_numpy(model(arrays["input"], training=False))
    assert relative_error(logits, arrays["logits"]) < MAX_RELATIVE_ERROR


def test_invalid_output_stride_is_named():
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got 4"):
        zoo.build("resnet50", input_shape=(32, 32, 3), output_stride=4)
    with pytest.raises(ValueError, match="'replace_conv' needs output_stride=32"):
        zoo.build("aa_resnet50", input_shape=(64, 64, 3), output_stride=8)


@pytest.mark.oracle
@pytest.mark.parametrize("output_stride", [8, 16])
def test_live_timm_dilated_resnet50(output_stride, tmp_path):
    """timm `create_model("resnet50", output_stride=...)` with every parameter randomised
    -> safetensors -> `zoo.load("resnet50", output_stride=...)`: features of the last stage
    and logits on a 96 x 80 batch."""
    pytest.importorskip("timm", reason="live oracle needs the `oracle` extra (timm, torch)")
    import timm
    import torch
    from safetensors.torch import save_file

    from tools.make_resnet_fixtures import float_state, randomize

    torch.manual_seed(0)
    reference = randomize(timm.create_model("resnet50", output_stride=output_stride), 0)
    path = tmp_path / "resnet50.safetensors"
    save_file(float_state(reference), str(path))
    images = torch.randn((2, 3, 96, 80), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = reference.forward_features(images).permute(0, 2, 3, 1).numpy()
        logits = reference.forward_head(reference.forward_features(images)).numpy()
    kwargs = dict(weights=path, input_shape=(96, 80, 3), output_stride=output_stride)
    model = zoo.load("resnet50", classifier_activation=None, **kwargs)
    backbone = zoo.load("resnet50", include_top=False, **kwargs)
    nhwc = images.permute(0, 2, 3, 1).numpy()
    feature_error = relative_error(to_numpy(backbone(nhwc, training=False)), features)
    logit_error = relative_error(to_numpy(model(nhwc, training=False)), logits)
    print(f"output_stride {output_stride}: features {feature_error:.2e}, logits {logit_error:.2e}")
    assert features.shape[1:3] == (96 // output_stride, 80 // output_stride)
    assert feature_error < 1e-5 and logit_error < 1e-5
