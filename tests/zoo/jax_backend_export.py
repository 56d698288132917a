"""zoo.export on the JAX backend: Keras' jax2tf SavedModel, run in TensorFlow against the JAX
Keras model; LiteRT and ONNX refused. The zoo suite runs on TensorFlow, so
`test_export_formats.py::test_exports_from_the_jax_backend` runs this file in a process with
KERAS_BACKEND=jax."""

import keras
import numpy as np
import pytest

import zoo
from zoo.exporting import ExportedModel

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


@pytest.mark.parametrize("format, suffix", [("litert", ".tflite"), ("onnx", ".onnx")])
def test_litert_and_onnx_are_refused_naming_the_backend_and_the_format(tmp_path, format, suffix):
    path = tmp_path / f"stn{suffix}"
    with pytest.raises(ValueError) as error:
        zoo.export("stn_cnn", path, format=format)
    assert str(error.value) == (
        f"format='{format}' is not supported on the 'jax' backend (zoo.export writes "
        "saved_model there); export it with KERAS_BACKEND=tensorflow"
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
