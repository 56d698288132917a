"""zoo.export on the JAX backend: Keras' jax2tf SavedModel and jax2onnx ONNX, each run in its
own runtime against the JAX Keras model; LiteRT refused. The zoo suite runs on TensorFlow, so
`test_export_formats.py::test_exports_from_the_jax_backend` runs this file in a process with
KERAS_BACKEND=jax."""

import os

import keras
import numpy as np
import pytest

import zoo
from keras_attention.layers import CBAM
from zoo.exporting import ExportedModel, ExportError, onnx_opset

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="run with KERAS_BACKEND=jax"
)


def _max_relative_error(outputs, reference):
    return np.abs(outputs - reference).max() / np.abs(reference).max()


def test_saved_model_of_the_shipped_stn_matches_the_jax_logits(tmp_path):
    from zoo.tasks import rts_mnist

    model = zoo.load("stn_cnn", weights="rts_mnist", classifier_activation=None)
    x = rts_mnist("test", seed=0)[0][:8].astype("float32")
    reference = np.asarray(model.predict(x, verbose=0))
    path = zoo.export(model, tmp_path / "stn_cnn", format="saved_model")
    runtime = ExportedModel(path)
    assert runtime.format == "saved_model"
    assert _max_relative_error(runtime.predict(x), reference) < 1e-4
    # the batch dimension stays open through jax2tf
    assert _max_relative_error(runtime.predict(x[:1]), reference[:1]) < 1e-4


class ColumnRamp(keras.layers.Layer):
    """Adds each column's index: `ops.arange(width)`, the call jax2onnx needs handed over as
    `arange(0, width)` (zoo.exporting._jax_tracing)."""

    def call(self, x):
        ramp = keras.ops.cast(keras.ops.arange(keras.ops.shape(x)[2]), x.dtype)
        return x + 0.1 * ramp[None, None, :, None]


def test_onnx_through_jax2onnx_matches_the_jax_model(tmp_path):
    import onnx

    inputs = keras.Input((6, 7, 3), name="image")
    features = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    features = CBAM(reduction_ratio=0.5, name="cbam")(ColumnRamp(name="ramp")(features))
    # a kernel over 1 MB, which jax2onnx writes to a `.data` file that zoo.export inlines
    hidden = keras.layers.Dense(800)(keras.layers.Flatten()(features))
    outputs = keras.layers.Dense(5)(hidden)
    model = keras.Model(inputs, outputs, name="tiny_cbam")
    rng = np.random.default_rng(0)
    for variable in model.weights:  # all parameters random, biases included
        variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))
    x = rng.random((3, 6, 7, 3), dtype=np.float32)
    reference = keras.ops.convert_to_numpy(model(x, training=False))
    path = zoo.export(model, tmp_path / "tiny.onnx", format="onnx")
    assert os.listdir(tmp_path) == ["tiny.onnx"]  # one self-contained file
    assert os.path.getsize(path) > 6 * 7 * 8 * 800 * 4
    opsets = {entry.domain: entry.version for entry in onnx.load(str(path)).opset_import}
    assert opsets[""] == onnx_opset() == 23
    assert _max_relative_error(ExportedModel(path).predict(x), reference) < 1e-4
    assert _max_relative_error(ExportedModel(path).predict(x[:1]), reference[:1]) < 1e-4


def test_litert_is_refused_naming_the_backend_and_the_format(tmp_path):
    with pytest.raises(ValueError) as error:
        zoo.export("stn_cnn", tmp_path / "stn.tflite", format="litert")
    assert str(error.value) == (
        "format='litert' is not supported on the 'jax' backend (Keras' export writes "
        "saved_model, onnx there); export it with KERAS_BACKEND=tensorflow"
    )
    assert not (tmp_path / "stn.tflite").exists()


class SvdSpectrum(keras.layers.Layer):
    """Singular values of a batch of matrices: jax2onnx converts rank-2 SVDs only."""

    def call(self, x):
        return keras.ops.sum(keras.ops.svd(x, compute_uv=False), axis=-1)


def test_an_op_jax2onnx_cannot_convert_names_the_op_and_the_layer(tmp_path):
    inputs = keras.Input((4, 3), name="matrix")
    model = keras.Model(inputs, SvdSpectrum(name="spectrum")(inputs), name="svd_model")
    path = tmp_path / "svd.onnx"
    with pytest.raises(ExportError) as error:
        zoo.export(model, path, format="onnx")
    assert str(error.value).startswith(
        "svd_model: onnx cannot convert JAX op jax.lax.svd in layer spectrum ("
    )
    assert not path.exists()


def test_cli_export_follows_keras_backend(tmp_path, capsys):
    """`export` on JAX writes serving_default only (the image signature decodes with
    TensorFlow ops); `--format litert` is refused in one line."""
    import tensorflow as tf

    from zoo.cli import main

    assert main(["export", "stn_cnn", "--base-path", str(tmp_path), "--version", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith("(signatures: serving_default; jax backend)")
    from zoo.tasks import rts_mnist

    x = rts_mnist("test", seed=0)[0][:4].astype("float32")
    expected = zoo.load("stn_cnn", weights="rts_mnist").predict(x, verbose=0)
    serve = tf.saved_model.load(str(tmp_path / "stn_cnn" / "3")).signatures["serving_default"]
    (outputs,) = serve(tf.constant(x)).values()
    np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-4, atol=1e-6)

    argv = ["export", "stn_cnn", "--format", "litert", "--base-path", str(tmp_path)]
    assert main(argv + ["--version", "4"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "format='litert' is not supported on the 'jax' backend" in error
    assert not (tmp_path / "stn_cnn" / "4").exists()
