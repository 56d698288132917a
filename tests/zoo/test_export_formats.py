"""zoo.export: SavedModel, LiteRT and ONNX files, each run by its own runtime (TensorFlow,
LiteRT's interpreter, onnxruntime) on the same inputs as Keras."""

import os

import keras
import numpy as np
import pytest

import zoo
from zoo.cli import export_version
from zoo.exporting import (
    ONNX_OPSET,
    ExportedModel,
    ExportError,
    check_backend,
    convert_saved_model_to_litert,
)

SUFFIX = {"saved_model": "", "litert": ".tflite", "onnx": ".onnx"}


def test_digits(count):
    from zoo.tasks import rts_mnist

    images, labels, _ = rts_mnist("test", seed=0)
    return images[:count].astype("float32"), labels[:count]


test_digits.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def stn_logits():
    """The shipped ST-CNN (rts_mnist weights) with a logits head, and its Keras logits."""
    model = zoo.load("stn_cnn", weights="rts_mnist", classifier_activation=None)
    x, _ = test_digits(16)
    return model, x, np.asarray(model.predict(x, verbose=0))


@pytest.fixture(scope="module")
def stn_saved_model(stn_logits, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "stn_cnn"
    return zoo.export(stn_logits[0], path, format="saved_model")


def _max_relative_error(outputs, reference):
    return np.abs(outputs - reference).max() / np.abs(reference).max()


def test_float32_litert_and_saved_model_match_keras_logits(stn_logits, stn_saved_model, tmp_path):
    model, x, reference = stn_logits
    tflite = zoo.export(model, tmp_path / "stn.tflite", format="litert")
    for path, format in ((stn_saved_model, "saved_model"), (tflite, "litert")):
        runtime = ExportedModel(path)
        assert runtime.format == format
        outputs = runtime.predict(x)
        assert outputs.shape == reference.shape == (16, 10)
        assert _max_relative_error(outputs, reference) < 1e-4, format
    # batch 1 as well: the exported batch dimension is dynamic
    np.testing.assert_allclose(
        ExportedModel(tflite).predict(x[:1]), reference[:1], rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow  # tf2onnx takes ~15 s even for this model
def test_float32_onnx_matches_keras_logits_at_the_pinned_opset(stn_logits, tmp_path):
    import onnx

    model, x, reference = stn_logits
    path = zoo.export(model, tmp_path / "stn.onnx", format="onnx")
    opsets = {entry.domain: entry.version for entry in onnx.load(str(path)).opset_import}
    assert opsets[""] == ONNX_OPSET
    assert _max_relative_error(ExportedModel(path).predict(x), reference) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    "quantization, min_agreement, max_relative_error",
    [("float16", 1.0, 1e-2), ("dynamic_int8", 0.98, 0.1)],
)
def test_quantized_litert_agrees_with_float32_on_the_test_digits(
    stn_logits, stn_saved_model, tmp_path, quantization, min_agreement, max_relative_error
):
    """Top-1 agreement with float32 Keras on 500 held-out rts_mnist digits, and the largest
    logit error relative to the largest logit."""
    model = stn_logits[0]
    x, _ = test_digits(500)
    reference = np.asarray(model.predict(x, verbose=0))
    path = convert_saved_model_to_litert(
        stn_saved_model, tmp_path / f"stn.{quantization}.tflite", quantization
    )
    float32_size = convert_saved_model_to_litert(stn_saved_model, tmp_path / "f32.tflite")
    assert os.path.getsize(path) < 0.6 * os.path.getsize(float32_size)
    outputs = ExportedModel(path).predict(x)
    agreement = float((outputs.argmax(-1) == reference.argmax(-1)).mean())
    error = _max_relative_error(outputs, reference)
    print(f"{quantization}: top-1 agreement {agreement:.3f}, max relative logit error {error:.2e}")
    assert agreement >= min_agreement
    assert 0 < error < max_relative_error


class SvdSpectrum(keras.layers.Layer):
    """A layer whose op (singular values) neither LiteRT's builtins nor ONNX have."""

    def call(self, x):
        return keras.ops.sum(keras.ops.svd(x, compute_uv=False), axis=-1)


@pytest.mark.parametrize("format", ["litert", "onnx"])
def test_an_op_without_conversion_fails_naming_the_op_and_the_layer(tmp_path, format):
    inputs = keras.Input((4, 3), name="matrix")
    model = keras.Model(inputs, SvdSpectrum(name="spectrum")(inputs), name="svd_model")
    path = tmp_path / f"svd{SUFFIX[format]}"
    with pytest.raises(ExportError) as error:
        zoo.export(model, path, format=format)
    assert str(error.value).startswith(
        f"svd_model: {format} cannot convert TensorFlow op Svd in layer spectrum "
    )
    assert not path.exists()  # nothing half-written is left


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format must be one of saved_model, litert, onnx"):
        zoo.export("stn_cnn", tmp_path / "m", format="coreml")
    with pytest.raises(ValueError, match="quantization must be None, 'float16' or"):
        zoo.export("stn_cnn", tmp_path / "m.tflite", format="litert", quantization="int4")
    with pytest.raises(ValueError, match="applies to format='litert' only"):
        zoo.export("stn_cnn", tmp_path / "m.onnx", format="onnx", quantization="float16")
    with pytest.raises(ValueError, match="a litert export is a file ending in .tflite"):
        zoo.export("stn_cnn", tmp_path / "m.onnx", format="litert")
    (tmp_path / "there.onnx").write_bytes(b"")
    with pytest.raises(FileExistsError, match="never overwrites"):
        zoo.export("stn_cnn", tmp_path / "there.onnx", format="onnx")
    with pytest.raises(ValueError, match=r"\['weights'\] apply to a model given by name"):
        zoo.export(keras.Sequential([keras.Input((2,))]), tmp_path / "m", weights=None)


@pytest.mark.slow
def test_cli_export_litert_version_folder_serves_the_shipped_weights(tmp_path, capsys):
    """`export --format litert` writes models/<name>/<version>/model.tflite (the layout
    `serve --prefer_tflite_model` reads); its probabilities are Keras'."""
    from zoo.cli import main

    code = main(
        ["export", "stn_cnn", "--format", "litert", "--base-path", str(tmp_path), "--version", "7"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("exported stn_cnn (rts_mnist) as litert to ")
    assert sorted(os.listdir(tmp_path / "stn_cnn")) == ["7"]
    assert os.listdir(tmp_path / "stn_cnn" / "7") == ["model.tflite"]
    x, _ = test_digits(8)
    expected = zoo.load("stn_cnn", weights="rts_mnist").predict(x, verbose=0)
    outputs = ExportedModel(tmp_path / "stn_cnn" / "7" / "model.tflite").predict(x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(FileExistsError, match="version 7 of model 'stn_cnn' already exists"):
        export_version(None, tmp_path, "stn_cnn", format="onnx", version=7)


def test_cli_export_refuses_quantized_onnx_in_one_line(tmp_path, capsys):
    from zoo.cli import main

    argv = ["export", "stn_cnn", "--format", "onnx", "--quantization", "float16"]
    assert main(argv + ["--base-path", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "quantization='float16' applies to format='litert' only" in error
    assert not (tmp_path / "stn_cnn").exists()


def test_formats_keras_does_not_export_on_a_backend_are_refused_naming_both():
    check_backend("saved_model", backend="jax")
    for format in ("litert", "onnx"):
        check_backend(format, backend="tensorflow")
        with pytest.raises(ValueError) as error:
            check_backend(format, backend="jax")
        assert str(error.value) == (
            f"format='{format}' is not supported on the 'jax' backend (zoo.export writes "
            "saved_model there); export it with KERAS_BACKEND=tensorflow"
        )
    with pytest.raises(ValueError, match="runs on the 'tensorflow' or 'jax' backend, not 'torch'"):
        check_backend("saved_model", backend="torch")


@pytest.mark.slow  # a JAX process: the STN's SavedModel, the CLI
def test_exports_from_the_jax_backend(tmp_path):
    """tests/zoo/jax_backend_export.py under KERAS_BACKEND=jax (the zoo suite runs on
    TensorFlow): the jax2tf SavedModel within 1e-4 of the JAX model in TensorFlow, LiteRT and
    ONNX refused naming the backend, the CLI's export."""
    from tests.other_backends import run_pytest_on_backend

    pytest.importorskip("jax")
    here = os.path.dirname(os.path.abspath(__file__))
    result = run_pytest_on_backend("jax", [os.path.join(here, "jax_backend_export.py")], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "4 passed" in result.stdout
