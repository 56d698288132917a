"""zoo.gain: GAIN's soft mask, attention-mining and pixel losses against closed forms, its
training step (TensorFlow here; JAX and PyTorch give the same loss and gradients in a
subprocess), Grad-CAM mass in a box, bad configurations, and the shipped weights."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import zoo
from tests.other_backends import OTHER_BACKENDS
from zoo import catalog, gain

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W, C, CLASSES = 6, 9, 3, 4


def linear_classifier():
    """image -> 1x1 conv (C channels, `features`) -> global average pool -> dense logits: its
    Grad-CAM has a closed form (d y_c / d F_k[i, j] = V[k, c] / (H W) everywhere)."""
    inputs = keras.Input((H, W, 1), name="image")
    x = keras.layers.Conv2D(C, 1, name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name="logits")(x))


def randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])


def softmax(z):
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def closed_form_losses(weights, images, labels, masks, w=10.0, s=0.5):
    """Mining and pixel losses of `linear_classifier` with `weights`, in numpy."""
    a, b, v, c = (np.asarray(t, np.float64) for t in weights)
    x = images.astype(np.float64)

    def forward(img):
        feats = img * a[0, 0, 0] + b  # (N, H, W, C)
        return feats, feats.mean(axis=(1, 2)) @ v + c

    feats, _ = forward(x)
    cam = np.maximum(np.einsum("nhwk,kn->nhw", feats, v[:, labels]) / (H * W), 0.0)
    low, high = cam.min(axis=(1, 2), keepdims=True), cam.max(axis=(1, 2), keepdims=True)
    attention = (cam - low) / (high - low + 1e-8)
    soft = sigmoid(w * (attention - s))[..., None]
    _, masked_logits = forward(x - soft * x)
    mining = softmax(masked_logits)[np.arange(len(labels)), labels].mean()
    return mining, np.mean((attention - masks) ** 2)


def test_soft_mask_is_the_papers_sigmoid_on_a_hand_made_map():
    attention = np.array([[[0.0, 0.25, 0.5], [0.6, 0.9, 1.0]]], np.float32)
    got = keras.ops.convert_to_numpy(gain.soft_mask(attention))
    np.testing.assert_allclose(got, sigmoid(10.0 * (attention - 0.5)), rtol=1e-6)
    assert got[0, 0, 2] == pytest.approx(0.5)
    sharper = keras.ops.convert_to_numpy(gain.soft_mask(attention, scale=40.0, threshold=0.25))
    np.testing.assert_allclose(sharper, sigmoid(40.0 * (attention - 0.25)), rtol=1e-6)
    raw = np.array([[[1.0, 3.0], [5.0, 2.0]]], np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(gain.normalize_maps(raw)), (raw - 1.0) / 4.0, atol=1e-6
    )


def test_mining_loss_is_the_mean_softmax_score_of_the_target_class():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
    labels = np.array([0, 1])
    expected = (softmax(logits)[0, 0] + softmax(logits)[1, 1]) / 2
    assert float(gain.attention_mining_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_gain_losses_match_the_closed_form_of_a_linear_classifier():
    classifier = linear_classifier()
    randomise(classifier)
    model = gain.GAIN(classifier, "features", alpha_e=0.5)
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(5, H, W, 1)).astype("float32")
    labels = np.array([0, 3, 1, 2, 3])
    masks = (rng.uniform(size=(5, H, W)) > 0.5).astype("float32")
    mining, pixel = model.gain_losses(images, model.features(images), labels, masks)
    want_mining, want_pixel = closed_form_losses(classifier.get_weights(), images, labels, masks)
    assert float(mining) == pytest.approx(want_mining, rel=1e-5)
    assert float(pixel) == pytest.approx(want_pixel, rel=1e-5)


def test_mass_in_box_against_closed_forms():
    maps = np.zeros((3, 4, 5))
    maps[0] = 1.0  # uniform: the box's share of the area
    maps[1, 0, 0], maps[1, 3, 4] = 3.0, 1.0  # 3 inside, 1 outside
    boxes = np.array([[1, 1, 3, 4], [0, 0, 2, 2], [0, 0, 4, 5]])
    shares = gain.mass_in_box(maps, boxes)
    assert shares[0] == pytest.approx(6 / 20) and shares[1] == pytest.approx(0.75)
    assert np.isnan(shares[2])  # no mass
    with pytest.raises(ValueError, match="`boxes`"):
        gain.mass_in_box(maps, boxes[:2])


def test_train_step_adds_the_mining_term_and_decreases_the_loss():
    keras.utils.set_random_seed(0)
    classifier = linear_classifier()
    model = gain.GAIN(classifier, "features", alpha=2.0)
    rng = np.random.default_rng(2)
    labels = np.arange(16) % CLASSES
    # a class the linear model can learn: the image's brightness
    images = (rng.uniform(size=(16, H, W, 1)) * (1 + labels[:, None, None, None])).astype("float32")
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    logits = keras.ops.convert_to_numpy(model(images))
    cross_entropy = -np.mean(np.log(softmax(logits)[np.arange(16), labels]))
    mining, _ = closed_form_losses(classifier.get_weights(), images, labels, 0.0)
    first = float(model.train_on_batch(images, labels))
    assert first == pytest.approx(cross_entropy + 2.0 * mining, rel=1e-5)
    for _ in range(20):
        last = float(model.train_on_batch(images, labels))
    assert last < 0.8 * first


def test_pixel_supervision_enters_the_training_loss_from_dict_inputs():
    classifier = linear_classifier()
    randomise(classifier, seed=5)
    model = gain.GAIN(classifier, "features", alpha=0.5, alpha_e=3.0)
    rng = np.random.default_rng(6)
    images = rng.uniform(size=(4, H, W, 1)).astype("float32")
    masks = (rng.uniform(size=(4, H, W)) > 0.7).astype("float32")
    labels = np.array([1, 0, 3, 2])
    model.compile(
        keras.optimizers.SGD(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    logits = keras.ops.convert_to_numpy(model(images))
    cross_entropy = -np.mean(np.log(softmax(logits)[np.arange(4), labels]))
    mining, pixel = closed_form_losses(classifier.get_weights(), images, labels, masks)
    loss = float(model.train_on_batch({"image": images, "mask": masks}, labels))
    assert loss == pytest.approx(cross_entropy + 0.5 * mining + 3.0 * pixel, rel=1e-5)


def test_config_round_trip_and_softmax_output():
    classifier = linear_classifier()
    model = gain.GAIN(classifier, "features", alpha=0.3, classifier_activation="softmax")
    config = model.get_config()
    clone = gain.GAIN.from_config(config)
    assert (clone.layer_name, clone.alpha, clone.classifier_activation) == (
        "features",
        0.3,
        "softmax",
    )
    clone.set_weights(model.get_weights())
    images = np.random.default_rng(3).uniform(size=(2, H, W, 1)).astype("float32")
    probs = keras.ops.convert_to_numpy(clone(images))
    np.testing.assert_allclose(probs, softmax(keras.ops.convert_to_numpy(classifier(images))), 1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_name": "conv9"}, r"`layer_name`: the classifier has no layer named 'conv9'"),
        (
            {"layer_name": "logits"},
            r"`layer_name` must name a layer with 4-D .* 'logits' \(Dense\)",
        ),
        ({"layer_name": "image"}, r"`layer_name` must name a layer with 4-D"),
        ({"alpha": -1.0}, r"`alpha` must be a number >= 0"),
        ({"mask_threshold": 2.0}, r"`mask_threshold` must be in \[0, 1\]"),
        ({"classifier_activation": "sigmoid"}, r"`classifier_activation` must be None"),
    ],
)
def test_bad_configuration_is_rejected_naming_the_argument(kwargs, message):
    kwargs = {"layer_name": "features", **kwargs}
    with pytest.raises(ValueError, match=message):
        gain.GAIN(linear_classifier(), **kwargs)


def test_a_layer_the_logits_can_bypass_is_rejected():
    inputs = keras.Input((H, W, 1))
    features = keras.layers.Conv2D(2, 1, name="features")(inputs)
    skip = keras.layers.Conv2D(2, 1, name="skip")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([features, skip]))
    classifier = keras.Model(inputs, keras.layers.Dense(CLASSES)(pooled))
    with pytest.raises(ValueError, match="`layer_name`: the classifier's logits do not depend"):
        gain.GAIN(classifier, "features")
    shared = keras.layers.Conv2D(1, 1, name="shared")
    twice = keras.layers.GlobalAveragePooling2D()(shared(shared(inputs)))
    classifier = keras.Model(inputs, keras.layers.Dense(CLASSES)(twice))
    with pytest.raises(ValueError, match="`layer_name`: the classifier's logits do not depend"):
        gain.GAIN(classifier, "shared")  # called twice: which call's maps is ambiguous
    with pytest.raises(ValueError, match="`classifier` must be a functional keras.Model"):
        gain.GAIN(keras.Sequential(), "features")


_BACKEND_STEP = r"""
import json, sys
import numpy as np
import keras
from zoo.gain import GAIN
data = np.load(sys.argv[1])
inputs = keras.Input((7, 9, 1), name="image")
x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv2")(x)
x = keras.layers.GlobalMaxPooling2D()(x)
classifier = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
model = GAIN(classifier, "conv2", alpha=1.5)
model.set_weights([data[f"w{i}"] for i in range(len(model.get_weights()))])
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(keras.optimizers.SGD(1.0), loss)
before = [np.array(w) for w in model.get_weights()]
loss = float(model.train_on_batch(data["images"], data["labels"]))
grads = [b - np.array(a) for a, b in zip(model.get_weights(), before)]
np.savez(sys.argv[2], loss=loss, **{f"g{i}": g for i, g in enumerate(grads)})
"""


def _run_backend_step(backend, tmp_path, data):
    inputs, outputs = tmp_path / "in.npz", tmp_path / f"{backend}.npz"
    np.savez(inputs, **data)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": REPO}
    env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, "-c", _BACKEND_STEP, str(inputs), str(outputs)],
        env=env,
        check=True,
        timeout=600,
    )
    result = np.load(outputs)
    return float(result["loss"]), [result[f"g{i}"] for i in range(len(data) - 2)]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_jax_and_torch_train_steps_match_tensorflow(backend, tmp_path):
    """One SGD step (lr 1) from the same random weights: the loss and the gradients (the
    weight change) agree across backends, second-order terms included."""
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    rng = np.random.default_rng(4)
    shapes = [(3, 3, 1, 4), (4,), (3, 3, 4, 5), (5,), (5, 3), (3,)]
    data = {f"w{i}": rng.normal(scale=0.5, size=s).astype("float32") for i, s in enumerate(shapes)}
    data["images"] = rng.uniform(size=(6, 7, 9, 1)).astype("float32")
    data["labels"] = np.array([0, 1, 2, 2, 1, 0])
    tf_loss, tf_grads = _run_backend_step("tensorflow", tmp_path, data)
    assert any(np.abs(g).max() > 1e-3 for g in tf_grads)
    loss, grads = _run_backend_step(backend, tmp_path, data)
    assert loss == pytest.approx(tf_loss, rel=1e-5)
    for i, (got, want) in enumerate(zip(grads, tf_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=f"weight {i}")


def test_shipped_weights_reproduce_the_recorded_metrics():
    """The first held-out images of the recorded task: accuracy and Grad-CAM mass in the
    digit's box as tools/train_gain.py recorded them for the shipped weights."""
    from tools.train_gain import CHECK_IMAGES, evaluate, task_data  # noqa: PLC0415

    recorded = catalog.GAIN_RESULTS
    model = zoo.load("gain_mnist_cnn", weights="cluttered_mnist", classifier_activation=None)
    images, labels, boxes = task_data("test", seed=0)
    n = CHECK_IMAGES
    correct, shares = evaluate(model, images[:n], labels[:n], boxes[:n])
    assert np.mean(correct) == pytest.approx(recorded["check_accuracy"].value, abs=1e-9)
    assert np.nanmean(shares) == pytest.approx(recorded["check_mass_in_box"].value, abs=1e-4)


def test_results_file_agrees_with_the_registry():
    results = json.loads(open(os.path.join(REPO, "benchmarks/results/gain.json")).read())
    spec = zoo.model_info("gain_mnist_cnn").weights_for("cluttered_mnist")
    assert spec.sha256 == results["weights"]["sha256"]
    recorded = catalog.GAIN_RESULTS
    assert recorded["check_accuracy"].value == results["weights"]["check_accuracy"]
    for side, prefix in (("gain", ""), ("baseline", "baseline_")):
        runs = [r for r in results["runs"] if r["side"] == side]
        assert sorted(r["seed"] for r in runs) == [0, 1, 2]
        for key in ("mass_in_box", "accuracy"):
            mean = np.mean([r[key] for r in runs])
            assert recorded[f"{prefix}{key}_seeds_mean"].value == pytest.approx(mean, abs=5e-5)
        sd = np.std([r["mass_in_box"] for r in runs], ddof=1)
        assert recorded[f"{prefix}mass_in_box_seeds_std"].value == pytest.approx(sd, abs=5e-5)
