"""zoo.convert.timm: each converter's declared weight map agrees with its layer's weights
and with the timm module's state-dict keys (the committed fixtures hold timm's keys), so
renaming a sublayer or weight in keras_attention fails here, naming the weight; converters
are found along the class hierarchy."""

import keras
import numpy as np
import pytest

from keras_attention import create_attention
from keras_attention import layers as L
from tests.keras_attention import all_oracle_cases
from tests.oracle_cases import FIXTURES, load_fixture
from zoo.convert import timm as timm_convert

FIXTURE_CASES = [case for case in all_oracle_cases() if (FIXTURES / f"{case.id}.npz").is_file()]


def _built(case):
    layer = case.keras_layer()
    layer.build(case.input_shape)
    return layer


def test_every_attention_converter_has_a_fixture_case():
    covered = {
        timm_convert.converter_for(_built(case)).layer_class
        for case in FIXTURE_CASES
        if timm_convert.converter_for(_built(case)) is not None
    }
    assert set(timm_convert.ATTENTION_LAYERS) <= covered


@pytest.mark.parametrize("case", FIXTURE_CASES, ids=lambda case: case.id)
def test_declared_map_matches_layer_weights_and_timm_keys(case):
    layer = _built(case)
    converter = timm_convert.converter_for(layer)
    assert converter is not None, f"no timm converter for {type(layer).__name__}"
    mapping = converter.weight_map(layer.get_config())
    assert set(mapping) == set(timm_convert.layer_weights(layer))
    state = load_fixture(case)["state"]
    timm_keys = {key for key in state if not key.endswith("num_batches_tracked")}
    assert {entry.key for entry in mapping.values()} == timm_keys


class _RenamedSqueezeExcite(L.SqueezeExcite):
    """SqueezeExcite whose first convolution is called `down` instead of `reduce`."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.reduce = keras.layers.Conv2D(self.reduced_channels, 1, name="down")
        self.reduce.build((None, 1, 1, channels))
        self.expand = keras.layers.Conv2D(channels, 1, name="expand")
        self.expand.build((None, 1, 1, self.reduced_channels))


def _se_state(channels=16, hidden=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.normal(size=(hidden, channels, 1, 1)).astype("float32"),
        "fc1.bias": rng.normal(size=(hidden,)).astype("float32"),
        "fc2.weight": rng.normal(size=(channels, hidden, 1, 1)).astype("float32"),
        "fc2.bias": rng.normal(size=(channels,)).astype("float32"),
    }


def test_a_renamed_sublayer_fails_its_converter_naming_the_weight():
    layer = _RenamedSqueezeExcite(reduced_channels=8)
    layer.build((None, 4, 4, 16))
    with pytest.raises(ValueError, match=r"down/kernel.*reduce/kernel"):
        timm_convert.load_timm_module(layer, _se_state())


def test_subclasses_use_their_parents_converter():
    class MySqueezeExcite(L.SqueezeExcite):
        pass

    state = _se_state()
    ours, parent = MySqueezeExcite(reduced_channels=8), L.SqueezeExcite(reduced_channels=8)
    for layer in (ours, parent):
        layer.build((None, 4, 4, 16))
        timm_convert.load_timm_module(layer, state)
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 16)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(parent(x))
    )
    # fc1 (out, in, 1, 1) became the (1, 1, in, out) kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(ours.weights[0]), state["fc1.weight"].transpose(2, 3, 1, 0)
    )


def test_layers_without_a_converter_are_refused_by_name():
    layer = create_attention("pam", 16)
    with pytest.raises(ValueError, match="no timm converter for PositionAttention"):
        timm_convert.load_timm_module(layer, {})


def test_configuration_mismatches_are_named():
    gate = create_attention("channel_gate", 16)
    with pytest.raises(ValueError, match="mlp_bias=True.*use_bias=False"):
        timm_convert.load_timm_module(gate, {"fc1.bias": np.zeros(1)})
    gc = create_attention("gc", 16, pooling="avg")
    with pytest.raises(ValueError, match="attention pooling.*pooling='avg'"):
        timm_convert.load_timm_module(gc, {"conv_attn.weight": np.zeros((1, 16, 1, 1))})
