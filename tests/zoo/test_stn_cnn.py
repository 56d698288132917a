"""ST-CNN and its plain-CNN baseline (zoo.stn_cnn), and the shipped rts_mnist weights.

Runs on the configured Keras backend (run it with KERAS_BACKEND=jax / torch as well).
"""

import hashlib
import pathlib
import re

import keras
import numpy as np
import pytest
from keras import ops

import zoo
from zoo import registry, tasks
from zoo import stn_cnn as stn_module
from zoo.models import build
from zoo.stn_cnn import build_mnist_cnn, build_stn_cnn

WEIGHTS_DIR = pathlib.Path(stn_module.__file__).parent / "data" / "weights"


def _transformer_output(model, x):
    sub = keras.Model(model.inputs, model.get_layer("spatial_transformer").output)
    return ops.convert_to_numpy(sub(x))


def test_fresh_transformer_is_the_identity():
    x = np.random.default_rng(0).uniform(size=(3, 42, 42, 1)).astype(np.float32)
    same_size = build_stn_cnn(output_size=(42, 42))
    # (float32 grid arithmetic: a few 1e-6 off)
    np.testing.assert_allclose(_transformer_output(same_size, x), x, atol=1e-5)
    # The localisation network starts at theta = identity whatever the input.
    loc = same_size.get_layer("spatial_transformer").localization
    np.testing.assert_allclose(
        ops.convert_to_numpy(loc(x)), np.tile([[1, 0, 0, 0, 1, 0]], (3, 1)), atol=1e-7
    )
    # 42 -> 28 with the identity (align_corners=False) averages 1.5-pixel cells: a constant
    # image stays constant, and a column step edge moves to the matching place.
    down = build_stn_cnn()
    const = np.full((1, 42, 42, 1), 0.7, np.float32)
    np.testing.assert_allclose(_transformer_output(down, const), 0.7, atol=1e-5)
    step = np.zeros((1, 42, 42, 1), np.float32)
    step[:, :, 21:] = 1.0
    out = _transformer_output(down, step)[0, 0, :, 0]
    np.testing.assert_allclose(out[:14], 0.0, atol=1e-5)
    np.testing.assert_allclose(out[14:], 1.0, atol=1e-5)


def test_fit_reaches_the_localisation_network():
    model = build_stn_cnn(classifier_activation=None)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    loc = model.get_layer("spatial_transformer").localization
    before = [ops.convert_to_numpy(w) for w in loc.trainable_weights]
    x, y, _ = tasks.rts_mnist("test", seed=0)
    history = model.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [ops.convert_to_numpy(w) for w in loc.trainable_weights]
    # The last layer's kernel starts at zero; the transform gradient must move it.
    assert np.abs(after[-2] - before[-2]).max() > 0


def test_baseline_is_of_similar_size_and_registry_builds_the_model():
    st, plain = build_stn_cnn(), build_mnist_cnn()
    assert 1.0 < st.count_params() / plain.count_params() < 1.6
    model = build("stn_cnn")
    assert tuple(model.input_shape) == (None, 42, 42, 1)
    spec = registry.get_spec("stn_cnn")
    assert spec.kind == "model" and spec.family == "spatial_transformer"
    with pytest.raises(ValueError, match="complete model"):
        build("stn_cnn", include_top=False)


@pytest.mark.slow
def test_shipped_weights_reproduce_their_recorded_error():
    spec = registry.get_spec("stn_cnn").weights_for("rts_mnist")
    path = WEIGHTS_DIR / spec.url.split("/")[-1]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    recorded = float(re.search(r"test error (\d+\.\d+)%", spec.metric).group(1))
    # the user's path: the registry's input size and the package file
    model = zoo.load("stn_cnn", weights="rts_mnist")
    assert tuple(model.input_shape) == (None, *spec.input_size, 1)
    x, y, _ = tasks.rts_mnist("test", seed=0)
    probs = model.predict(x, batch_size=100, verbose=0)
    error = 100 * np.mean(probs.argmax(1) != y)
    # Deterministic inference: the same digits right on every backend, up to a tie or two.
    assert abs(error - recorded) <= 0.2, (error, recorded)
