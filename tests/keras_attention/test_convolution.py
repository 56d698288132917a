"""GroupedConv2D: Conv2D's results and weights, and a SavedModel without XLA functions."""

import keras
import numpy as np
import pytest

from keras_attention.convolution import GroupedConv2D
from tests.layer_harness import randomize_weights, to_numpy


def grouped_conv_reference(x, kernel, bias, groups, stride, dilation):
    """Closed form of a grouped convolution, 'valid' padding, channels last, float64."""
    x, kernel = x.astype("float64"), kernel.astype("float64")
    kh, kw, group_in, filters = kernel.shape
    group_out = filters // groups
    out_h = (x.shape[1] - dilation * (kh - 1) - 1) // stride + 1
    out_w = (x.shape[2] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, filters))
    for g in range(groups):
        xg = x[..., g * group_in : (g + 1) * group_in]
        kg = kernel[..., g * group_out : (g + 1) * group_out]
        for i in range(kh):
            for j in range(kw):
                rows = xg[:, i * dilation :: stride][:, :out_h]
                patch = rows[:, :, j * dilation :: stride][:, :, :out_w]
                out[..., g * group_out : (g + 1) * group_out] += patch @ kg[i, j]
    return out + bias


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
def test_matches_the_closed_form_and_conv2d(stride, dilation):
    rng = np.random.default_rng(stride + 10 * dilation)
    x = rng.normal(size=(2, 11, 9, 12)).astype("float32")
    layer = GroupedConv2D(8, 3, strides=stride, dilation_rate=dilation, groups=4)
    layer.build(x.shape)
    randomize_weights(layer, seed=3)
    kernel, bias = (to_numpy(w) for w in layer.weights)
    expected = grouped_conv_reference(x, kernel, bias, 4, stride, dilation)
    got = to_numpy(layer(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    conv = keras.layers.Conv2D(8, 3, strides=stride, dilation_rate=dilation, groups=4)
    conv.build(x.shape)
    conv.set_weights([kernel, bias])
    np.testing.assert_allclose(got, to_numpy(conv(x)), rtol=1e-5, atol=1e-5)


def test_serialises_as_itself():
    layer = GroupedConv2D(6, 1, groups=3, use_bias=False, name="z")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is GroupedConv2D
    assert clone.get_config() == layer.get_config()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow SavedModel")
def test_saved_model_has_no_xla_compiled_function(tmp_path):
    from serving.saved_model import xla_compiled_functions

    inputs = keras.Input((7, 5, 8))
    keras_grouped = keras.layers.Conv2D(4, 3, groups=4)(inputs)
    ours = GroupedConv2D(4, 3, groups=4)(inputs)
    keras.Model(inputs, keras_grouped).export(tmp_path / "keras", verbose=False)
    keras.Model(inputs, ours).export(tmp_path / "ours", verbose=False)
    assert xla_compiled_functions(tmp_path / "keras")  # what GroupedConv2D avoids
    assert xla_compiled_functions(tmp_path / "ours") == []
