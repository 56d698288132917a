"""serving.export: layout, atomicity, no overwrite, float32 outputs, and serving the result."""

import json
import os
import urllib.request
import warnings

import keras
import numpy as np
import pytest

from serving.saved_model import export


def small_model(name="features"):
    inputs = keras.Input((4,), name=name)
    outputs = keras.layers.Dense(3, name="dense")(inputs)
    return keras.Model(inputs, outputs)


def test_export_reload_and_versions(tmp_path):
    import tensorflow as tf

    keras.config.set_dtype_policy("mixed_float16")
    model = small_model()
    path = export(model, tmp_path, "m")
    assert path == os.path.join(tmp_path, "m", "1")
    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["features"]
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    got = signature(features=tf.constant(x))["output_0"]
    assert got.dtype == tf.float32
    np.testing.assert_allclose(
        got.numpy(), model.predict(x, verbose=0).astype("float32"), atol=1e-6
    )
    assert export(model, tmp_path, "m").endswith(os.path.join("m", "2"))
    assert export(model, tmp_path, "m", version=10).endswith("10")
    assert export(model, tmp_path, "m").endswith("11")
    with pytest.raises(FileExistsError, match="already exists"):
        export(model, tmp_path, "m", version=2)
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "10", "11", "2"]


def test_failed_export_leaves_nothing(tmp_path):
    class Broken(keras.layers.Layer):
        def call(self, x):
            raise RuntimeError("cannot trace")

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.call = lambda *a, **k: Broken()(a[0])
    with pytest.raises(RuntimeError, match="cannot trace"):
        export(model, tmp_path, "broken", version=1)
    assert os.listdir(tmp_path / "broken") == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="invalid model name"):
        export(small_model(), tmp_path, "../x")
    with pytest.raises(ValueError, match="positive integer"):
        export(small_model(), tmp_path, "m", version=0)


def test_exported_model_is_served(tmp_path):
    from serving.models import single_model_config
    from serving.server import Server

    model = small_model()
    export(model, tmp_path, "m", version=3)
    (tmp_path / "m" / "notaversion").mkdir()
    export(model, tmp_path, "m", version=2)
    with Server(
        single_model_config("m", str(tmp_path / "m")),
        rest_api_port=0,
        port=None,
        host="127.0.0.1",
        poll_wait_seconds=0.2,
    ) as server:
        base = f"http://127.0.0.1:{server.rest_api_port}/v1/models/m"
        status = json.loads(urllib.request.urlopen(base, timeout=10).read())
        assert [s["version"] for s in status["model_version_status"]] == ["3"]  # latest policy
        x = [[0.1, 0.2, 0.3, 0.4]]
        request = urllib.request.Request(
            base + ":predict", json.dumps({"instances": [{"features": x[0]}]}).encode()
        )
        got = json.loads(urllib.request.urlopen(request, timeout=10).read())["predictions"]
        np.testing.assert_allclose(got, model.predict(np.array(x, "float32"), verbose=0), rtol=1e-5)
        export(model, tmp_path, "m")  # version 4 appears: loaded, then 3 unloaded
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = json.loads(urllib.request.urlopen(base, timeout=10).read())
            states = {s["version"]: s["state"] for s in status["model_version_status"]}
            if states == {"4": "AVAILABLE", "3": "END"}:
                break
            time.sleep(0.1)
        assert states == {"4": "AVAILABLE", "3": "END"}


def test_cli_serve_flags():
    from zoo.cli import build_parser

    args = build_parser().parse_args(
        [
            "serve",
            "--rest_api_port",
            "0",
            "--model_name",
            "x",
            "--model_base_path",
            "/tmp/x",
            "--file_system_poll_wait_seconds",
            "2",
        ]
    )
    assert (args.rest_api_port, args.model_name, args.file_system_poll_wait_seconds) == (
        0,
        "x",
        2.0,
    )


JAX_EXPORT = r"""
import sys
import numpy as np
import keras
import serving

keras.utils.set_random_seed(0)
inputs = keras.Input((6,), name="features")
hidden = keras.layers.Dense(5, activation="relu", dtype="mixed_bfloat16")(inputs)
model = keras.Model(inputs, keras.layers.Dense(3, dtype="mixed_bfloat16")(hidden))
x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
path = serving.export(model, sys.argv[1], "jaxmodel")
np.savez(sys.argv[2], x=x, y=np.asarray(model.predict(x, verbose=0), "float32"))
try:
    serving.export(model, sys.argv[1], "jaxmodel", image_signature=True)
except ValueError as error:
    print("image_signature:", error)
print("exported", path)
"""


def test_jax_backend_export_serves_the_same_answers(tmp_path):
    """On the JAX backend export goes through jax2tf; TensorFlow Serving sees the same
    `serving_default` (named input, float32 output) and the model's own answers."""
    import subprocess
    import sys

    import tensorflow as tf

    result = subprocess.run(
        [sys.executable, "-c", JAX_EXPORT, str(tmp_path / "models"), str(tmp_path / "ref.npz")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "image_signature: image_signature needs the TensorFlow backend" in result.stdout
    version = tmp_path / "models" / "jaxmodel" / "1"
    assert sorted(os.listdir(tmp_path / "models" / "jaxmodel")) == ["1"]  # nothing half-written
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"features"}
    assert signature.structured_outputs["output_0"].dtype == tf.float32
    reference = np.load(tmp_path / "ref.npz")
    got = signature(features=tf.constant(reference["x"]))["output_0"].numpy()
    np.testing.assert_allclose(got, reference["y"], rtol=1e-5, atol=1e-5)


def _grouped_conv_model():
    inputs = keras.Input((6, 5, 8), name="x")
    return keras.Model(inputs, keras.layers.Conv2D(4, 3, groups=4, name="grouped")(inputs))


def test_a_model_that_needs_xla_is_named_at_export_and_at_load(tmp_path, caplog):
    """Keras' TensorFlow backend compiles a grouped convolution with XLA; TF Serving runs
    such a function only with --xla_cpu_compilation_enabled=true."""
    from serving.models import Servable
    from serving.saved_model import XlaCompilationWarning, xla_compiled_functions

    with pytest.warns(XlaCompilationWarning, match="--xla_cpu_compilation_enabled=true"):
        path = export(_grouped_conv_model(), tmp_path, "grouped")
    assert len(xla_compiled_functions(path)) >= 1
    with caplog.at_level("WARNING", logger="serving"):
        Servable("grouped", 1, path)
    assert "model grouped version 1 holds functions compiled with XLA" in caplog.text
    assert "--xla_cpu_compilation_enabled=true" in caplog.text

    caplog.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", XlaCompilationWarning)
        plain = export(small_model(), tmp_path, "plain")
    assert xla_compiled_functions(plain) == []
    with caplog.at_level("WARNING", logger="serving"):
        Servable("plain", 1, plain)
    assert "XLA" not in caplog.text
