"""`keras_attention.factory`: names, defaults and timm compatibility."""

import re

import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.factory import create_attention, describe_attention, list_attention


def test_none_and_empty_give_no_attention():
    assert create_attention(None) is None
    assert create_attention("", 64) is None


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        create_attention("squeeze", 64)
    message = str(info.value)
    assert "squeeze" in message
    for name in list_attention():
        assert re.search(rf"\b{name}\b", message), f"{name!r} missing from {message!r}"


def test_every_name_builds_and_is_described():
    assert set(describe_attention()) == set(list_attention())
    for name in list_attention():
        layer = create_attention(name, 64)
        assert layer.built, name


@pytest.mark.parametrize(
    "name, cls, attributes",
    [
        ("eca", L.EfficientChannelAttention, {"circular": False, "kernel_size": None}),
        ("ceca", L.EfficientChannelAttention, {"circular": True, "kernel_size": None}),
        ("cam", L.DualChannelAttention, {"energy": "official"}),
    ],
)
def test_names_map_to_layers(name, cls, attributes):
    layer = create_attention(name, 64)
    assert type(layer) is cls
    for key, value in attributes.items():
        assert getattr(layer, key) == value


# timm.layers.GlobalContext(64) defaults: rd_ratio=1/8 with rd_divisor=1 -> 8 channels,
# LayerNorm2d eps=1e-6; "gc" fuses by sigmoid scale, "gca" by addition.
@pytest.mark.parametrize("name, fusion", [("gc", "multiply"), ("gca", "add")])
def test_global_context_names_match_timm_configuration(name, fusion):
    layer = create_attention(name, 64)
    assert type(layer) is L.GlobalContext
    assert layer.reduce.filters == 8
    assert layer.norm.epsilon == 1e-6
    assert layer.fusion == fusion
    assert layer.pooling == "attention"
    assert layer.zero_init_last == (fusion == "add")


def test_overrides_replace_defaults():
    layer = create_attention("gc", 64, reduced_channels=4, norm_epsilon=1e-5)
    assert layer.reduce.filters == 4 and layer.norm.epsilon == 1e-5
    assert layer.fusion == "multiply"


@pytest.mark.oracle
@pytest.mark.parametrize(
    "name, timm_kwargs",
    [
        ("gc", {}),
        ("gca", {"fuse_add": True, "fuse_scale": False}),
    ],
)
def test_global_context_names_load_timm_weights(name, timm_kwargs):
    pytest.importorskip("timm", reason="needs the `oracle` extra (timm, torch)")
    import torch
    from timm.layers.global_context import GlobalContext

    from zoo.convert.timm import load_timm_module

    torch.manual_seed(0)
    module = GlobalContext(64, **timm_kwargs).eval()
    mlp = module.mlp_scale if module.mlp_scale is not None else module.mlp_add
    assert mlp.fc1.out_channels == 8 and mlp.norm.eps == 1e-6
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
        x = torch.randn(2, 64, 5, 6)
        expected = module(x).permute(0, 2, 3, 1).numpy()
    state = {k: v.numpy() for k, v in module.state_dict().items()}

    layer = create_attention(name, 64)
    load_timm_module(layer, state)
    import keras

    ours = keras.ops.convert_to_numpy(layer(x.permute(0, 2, 3, 1).numpy()))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_attention_map_reads_a_layer_inside_a_trained_model():
    import keras
    import numpy as np

    import keras_attention
    from keras_attention.layers import CBAM

    inputs = keras.Input((12, 12, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    cbam = CBAM(reduction_ratio=1 / 4, name="cbam")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(cbam(features)))
    x = np.random.default_rng(0).normal(size=(5, 12, 12, 3)).astype("float32")
    maps = keras_attention.attention_map(model, "cbam", x, batch_size=2)
    conv_out = model.get_layer("conv")(x)
    _, expected = cbam(conv_out, return_attention=True)
    assert maps.shape == (5, 12, 12, 1)
    np.testing.assert_allclose(maps, keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6)


def test_mechanism_first_and_the_layer_name_passes_through():
    layer = create_attention("se", 64, name="layer1-0-se")
    assert type(layer) is L.SqueezeExcite and layer.name == "layer1-0-se"
    assert create_attention("cbam", name="attn").name == "attn"


def test_old_keyword_spelling_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="pass the mechanism first"):
        layer = create_attention(name="eca")
    assert type(layer) is L.EfficientChannelAttention
    with pytest.raises(TypeError, match="attention mechanism as its first argument"):
        create_attention()


def test_timm_argument_names_are_accepted_where_the_layer_has_them():
    # timm SEModule(64, rd_ratio=1/4, rd_divisor=4) -> make_divisible(16, 4) = 16 channels
    se = create_attention("se", 64, rd_ratio=1 / 4, rd_divisor=4)
    assert (se.reduction_ratio, se.divisor, se.reduce.filters) == (1 / 4, 4, 16)
    gate = create_attention("channel_gate", 40, rd_channels=5)
    assert gate.reduce.filters == 5
    with pytest.raises(
        ValueError,
        match=r"`rd_ratio` \(timm's name for `reduction_ratio`\) "
        r"does not apply to attention='eca'",
    ):
        create_attention("eca", 64, rd_ratio=1 / 4)
    with pytest.raises(ValueError, match="Pass `rd_divisor` or `divisor`, not both"):
        create_attention("se", 64, rd_divisor=4, divisor=8)
