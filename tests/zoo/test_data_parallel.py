"""Data-parallel training on virtual devices gives the loss curve of one device with the
global batch: TF `tf.distribute.MirroredStrategy` over 2 logical CPUs, JAX
`keras.distribution.DataParallel` over 2 host devices. Each backend runs in a subprocess
(devices must be configured before the framework initialises).

The model (conv, squeeze-excite, conv) has no BatchNormalization (CBAM's spatial gate
has one): under MirroredStrategy each replica normalises with its own half batch (Keras' `BatchNormalization(synchronized=True)` fixes that on TF), so
BN models legitimately differ from one device. On JAX the sharded step computes the
global-batch statistics, BN or not.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {repo!r})
    backend = os.environ["KERAS_BACKEND"]
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import zoo
    import zoo.train
    from keras_attention.layers import SqueezeExcite

    def small_model(input_shape, num_classes):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        x = SqueezeExcite(name="se")(x)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes, dtype="float32")(x))

    class Curve(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses = []
        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))  # running mean within the epoch

    images, labels = zoo.datasets.mnist_subset("test")
    data = (images[:128], labels[:128])
    recipe = zoo.train.Recipe(optimizer="sgd", learning_rate=0.5, warmup_epochs=0,
                              crop_padding=0.1, flip=False)
    results = {{}}
    for mode in ("single", sys.argv[1]):
        curve = Curve()
        model, history = zoo.train.fit(
            small_model, data, epochs=2, batch_size=32, seed=3, recipe=recipe, verbose=0,
            distribution=None if mode == "single" else mode, callbacks=[curve])
        results[mode] = {{"curve": curve.losses, "weights": [np.asarray(w).tolist() for w in model.weights]}}
    if backend == "tensorflow":
        results["replicas"] = len(tf.config.list_logical_devices("CPU"))
    else:
        import jax
        results["replicas"] = len(jax.devices())
    print("RESULT", json.dumps(results))
""")


def _run(tmp_path, backend, mode, env_extra=None):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=REPO))
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    done = subprocess.run(
        [sys.executable, str(script), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(lines[-1][7:])


def _same_curve(results, mode):
    assert results["replicas"] == 2
    single, parallel = results["single"], results[mode]
    assert len(single["curve"]) == len(parallel["curve"]) == 8  # 2 epochs x 4 steps
    np.testing.assert_allclose(parallel["curve"], single["curve"], rtol=1e-4)
    assert single["curve"][-1] < single["curve"][0]  # it trains
    for a, b in zip(parallel["weights"], single["weights"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_mirrored_strategy_two_logical_cpus_matches_one_device(tmp_path):
    pytest.importorskip("tensorflow")
    _same_curve(_run(tmp_path, "tensorflow", "mirrored"), "mirrored")


@pytest.mark.slow
def test_jax_data_parallel_two_host_devices_matches_one_device(tmp_path):
    pytest.importorskip("jax")
    results = _run(
        tmp_path, "jax", "data_parallel", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    )
    _same_curve(results, "data_parallel")
