"""zoo.load / zoo.build: tags, paths, downloads over loopback HTTP and file://, the cache,
conversion from timm safetensors, heads, and the errors users see."""

import dataclasses
import hashlib
import socket

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import zoo
from zoo import registry
from zoo.backbones.common import batch_norm, conv2d
from zoo.registry import WeightsSpec
from zoo.weights import WeightsError

NAME = "tiny_test_net"
CLASSES = 5


def _tiny_body(inputs):
    x = conv2d(inputs, 4, 3, strides=2, name="conv1")
    x = batch_norm(x, name="bn1")
    x = keras.layers.ReLU(name="act1")(x)
    return {"stem": x}


def _state(seed=0, classes=CLASSES):
    rng = np.random.default_rng(seed)
    return {
        "conv1.weight": rng.normal(size=(4, 3, 3, 3)).astype("float32"),
        "bn1.weight": rng.normal(size=4).astype("float32"),
        "bn1.bias": rng.normal(size=4).astype("float32"),
        "bn1.running_mean": rng.normal(size=4).astype("float32"),
        "bn1.running_var": rng.uniform(0.5, 1.5, size=4).astype("float32"),
        "bn1.num_batches_tracked": np.array(3, dtype="int64"),
        "fc.weight": rng.normal(size=(classes, 4)).astype("float32"),
        "fc.bias": rng.normal(size=classes).astype("float32"),
    }


def _numpy_forward(state, x):
    """conv 3x3 stride 2 padding 1 (PyTorch), BN (eps 1e-5), ReLU, global mean, Linear."""
    w = state["conv1.weight"]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, wd, _ = x.shape
    oh, ow = (h - 1) // 2 + 1, (wd - 1) // 2 + 1
    y = np.zeros((n, oh, ow, 4))
    for i in range(3):
        for j in range(3):
            patch = padded[:, i : i + 2 * oh : 2, j : j + 2 * ow : 2]
            y += np.einsum("nhwc,oc->nhwo", patch, w[:, :, i, j])
    y = (y - state["bn1.running_mean"]) / np.sqrt(state["bn1.running_var"] + 1e-5)
    y = np.maximum(y * state["bn1.weight"] + state["bn1.bias"], 0.0)
    return y.mean(axis=(1, 2)) @ state["fc.weight"].T + state["fc.bias"], y


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _register(monkeypatch, weights=()):
    monkeypatch.setitem(
        registry._REGISTRY,
        NAME,
        registry.ModelSpec(
            name=NAME,
            body=_tiny_body,
            default_input_shape=(9, 11, 3),
            num_classes=CLASSES,
            weights=tuple(weights),
            mean=(0.5, 0.25, 0.0),
            std=(0.5, 0.25, 1.0),
        ),
    )


def _spec(tag, url, sha256, **overrides):
    fields = dict(
        tag=tag,
        url=url,
        file_format="safetensors",
        sha256=sha256,
        input_size=(9, 11),
        num_classes=CLASSES,
        trained_on="random numbers",
        metric="none (test fixture)",
    )
    fields.update(overrides)
    return WeightsSpec(**fields)


@pytest.fixture
def checkpoint(http_root):
    root, base, requests = http_root
    state = _state()
    path = root / "tiny.safetensors"
    save_file(state, str(path))
    return state, path, f"{base}/tiny.safetensors", requests


def _images(shape=(2, 9, 11, 3), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_tag_downloads_over_http_converts_and_caches(monkeypatch, keras_home, checkpoint):
    state, path, url, requests = checkpoint
    _register(monkeypatch, [_spec("random", url, _sha256(path))])
    model = zoo.load(NAME, weights="random", classifier_activation=None)
    x = _images()
    expected, _ = _numpy_forward(state, x)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert requests == ["/tiny.safetensors"]
    assert sorted(p.name for p in keras_home.iterdir()) == [
        f"{NAME}.random.9x11.weights.h5",
        f"{NAME}.random.tiny.safetensors",
    ]
    # the second load converts nothing and downloads nothing
    (keras_home / f"{NAME}.random.tiny.safetensors").unlink()
    again = zoo.load(NAME, weights="random", classifier_activation=None)
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert requests == ["/tiny.safetensors"]


def test_file_url_and_softmax_head(monkeypatch, keras_home, checkpoint):
    state, path, _, _ = checkpoint
    _register(monkeypatch, [_spec("local", path.as_uri(), None)])
    model = zoo.load(NAME, weights="local")
    logits, _ = _numpy_forward(state, _images())
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    np.testing.assert_allclose(model.predict(_images(), verbose=0), probabilities, atol=1e-6)


def test_bad_hash_leaves_nothing_in_the_cache(monkeypatch, keras_home, checkpoint):
    _, _, url, requests = checkpoint
    _register(monkeypatch, [_spec("random", url, "0" * 64)])
    with pytest.raises(WeightsError, match="sha256 mismatch for http://127.0.0.1:.*removed"):
        zoo.load(NAME, weights="random")
    assert requests == ["/tiny.safetensors"]
    assert list(keras_home.iterdir()) == []


def test_failed_download_names_the_url_and_the_cache_path(monkeypatch, keras_home):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/gone.safetensors"
    _register(monkeypatch, [_spec("random", url, None)])
    target = keras_home / f"{NAME}.random.gone.safetensors"
    with pytest.raises(WeightsError) as info:
        zoo.load(NAME, weights="random")
    message = str(info.value)
    assert url in message and str(target) in message and "copy it to" in message
    assert list(keras_home.iterdir()) == []


def test_a_preseeded_cache_needs_no_network(monkeypatch, keras_home, checkpoint):
    state, path, _, _ = checkpoint
    keras_home.mkdir(parents=True)
    (keras_home / f"{NAME}.random.tiny.safetensors").write_bytes(path.read_bytes())
    _register(monkeypatch, [_spec("random", "http://127.0.0.1:9/tiny.safetensors", _sha256(path))])
    model = zoo.load(NAME, weights="random", classifier_activation=None)
    np.testing.assert_allclose(
        model.predict(_images(), verbose=0),
        _numpy_forward(state, _images())[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_local_safetensors_heads_and_features(monkeypatch, keras_home, checkpoint):
    state, path, _, _ = checkpoint
    _register(monkeypatch)
    x = _images()
    logits, feature_map = _numpy_forward(state, x)
    headless = zoo.load(NAME, weights=path, include_top=False, pooling="avg")
    np.testing.assert_allclose(
        headless.predict(x, verbose=0), feature_map.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5
    )
    features = zoo.load(NAME, weights=str(path), features_only=True)
    np.testing.assert_allclose(
        features.predict(x, verbose=0)["stem"], feature_map, rtol=1e-5, atol=1e-5
    )
    # another class count: pretrained backbone, new classifier
    fine_tune = zoo.load(NAME, weights=str(path), num_classes=3, classifier_activation=None)
    assert fine_tune.get_layer("fc").kernel.shape == (4, 3)
    np.testing.assert_allclose(
        fine_tune.get_layer("bn1").moving_mean.numpy(), state["bn1.running_mean"]
    )
    # other input sizes load the same weights
    bigger = zoo.load(NAME, weights=str(path), input_shape=(13, 8, 3), classifier_activation=None)
    y = _images((1, 13, 8, 3))
    np.testing.assert_allclose(
        bigger.predict(y, verbose=0), _numpy_forward(state, y)[0], rtol=1e-5, atol=1e-5
    )


def test_wrong_architecture_names_the_first_mismatching_weight(monkeypatch, keras_home, tmp_path):
    _register(monkeypatch)
    state = _state()
    state["conv1.weight"] = state["conv1.weight"][:3]
    save_file(state, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(WeightsError, match=r"weight 'conv1.weight' has shape \(3, 3, 3, 3\)"):
        zoo.load(NAME, weights=str(tmp_path / "narrow.safetensors"))
    state = _state()
    state["layer1.0.conv1.weight"] = np.zeros((1,), "float32")
    save_file(state, str(tmp_path / "extra.safetensors"))
    with pytest.raises(
        WeightsError,
        match=r"weight 'layer1.0.conv1.weight' \(shape \(1,\)\) "
        r"matches no layer",
    ):
        zoo.load(NAME, weights=str(tmp_path / "extra.safetensors"))
    state = _state()
    del state["bn1.running_var"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(
        WeightsError, match="layer 'bn1' .* wants checkpoint has no weight 'bn1.running_var'"
    ):
        zoo.load(NAME, weights=str(tmp_path / "missing.safetensors"))
    (tmp_path / "garbage.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        zoo.load(NAME, weights=str(tmp_path / "garbage.safetensors"))


def test_keras_weight_files_round_trip_and_mismatches_are_named(monkeypatch, keras_home, tmp_path):
    _register(monkeypatch)
    source = zoo.build(NAME)
    source.save_weights(str(tmp_path / "tiny.weights.h5"))
    source.save(str(tmp_path / "tiny.keras"))
    x = _images()
    for path in ("tiny.weights.h5", "tiny.keras"):
        loaded = zoo.load(NAME, weights=str(tmp_path / path))
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), source.predict(x, verbose=0))
    # a model without the BN layer would load the convolution silently with plain Keras
    inputs = keras.Input((9, 11, 3))
    other = keras.Model(
        inputs,
        keras.layers.Dense(CLASSES)(
            keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
        ),
    )
    other.save_weights(str(tmp_path / "other.weights.h5"))
    with pytest.raises(
        WeightsError,
        match="at 'layers/batch_normalization/vars/0' the model "
        r"expects shape \(4,\) and the file holds nothing",
    ):
        zoo.load(NAME, weights=str(tmp_path / "other.weights.h5"))


def _tiny_body_of_width(inputs, width=4):
    x = conv2d(inputs, width, 3, strides=2, name="conv1")
    return {"stem": keras.layers.ReLU(name="act1")(x)}


def test_tagged_keras_weights_build_the_architecture_they_were_saved_from(
    monkeypatch, keras_home, tmp_path
):
    monkeypatch.setitem(
        registry._REGISTRY,
        NAME,
        registry.ModelSpec(
            name=NAME, body=_tiny_body_of_width, default_input_shape=(9, 11, 3), num_classes=CLASSES
        ),
    )
    source = zoo.build(NAME, width=6)
    path = tmp_path / "wide.weights.h5"
    source.save_weights(str(path))
    wide = _spec(
        "wide", path.as_uri(), _sha256(path), file_format="weights.h5", architecture={"width": 6}
    )
    monkeypatch.setitem(
        registry._REGISTRY, NAME, dataclasses.replace(registry._REGISTRY[NAME], weights=(wide,))
    )
    x = _images()
    for kwargs in ({}, {"width": 6}):
        loaded = zoo.load(NAME, weights="wide", **kwargs)
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), source.predict(x, verbose=0))
    with pytest.raises(ValueError, match="weights='wide' were saved from width=6; got width=4"):
        zoo.load(NAME, weights="wide", width=4)


def test_argument_errors_list_the_valid_choices(monkeypatch, keras_home, tmp_path):
    _register(monkeypatch, [_spec("random", "http://127.0.0.1:9/x.safetensors", None)])
    with pytest.raises(ValueError, match=f"unknown model 'nope'; registered models: .*{NAME}"):
        zoo.load("nope")
    with pytest.raises(
        ValueError,
        match="unknown weights 'imagenet' for tiny_test_net: tags "
        "are random; or pass a path ending in .safetensors",
    ):
        zoo.load(NAME, weights="imagenet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.load(NAME, weights=str(tmp_path / "absent.weights.h5"))
    with pytest.raises(ValueError, match="pooling must be None, 'avg' or 'max', got 'sum'"):
        zoo.load(NAME, include_top=False, pooling="sum")
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        zoo.load(NAME, num_classes=0)
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, channels\)"):
        zoo.load(NAME, input_shape=(9, 11))


def test_list_models_and_preprocess_input(monkeypatch):
    _register(monkeypatch, [_spec("random", "http://127.0.0.1:9/x.safetensors", None)])
    assert NAME in zoo.list_models(pretrained=True)
    assert NAME not in zoo.list_models(pretrained=False)
    model = zoo.build(NAME)
    images = np.array([[[[255.0, 0.0, 51.0]]]], "float32")
    expected = [[[[(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 0.25, 0.2]]]]
    np.testing.assert_allclose(model.preprocess_input(images), expected, rtol=1e-6)
    np.testing.assert_allclose(zoo.preprocess_input(images, NAME), expected, rtol=1e-6)


def test_decode_predictions():
    scores = np.zeros((2, 1000), "float32")
    scores[0, [1, 0, 999]] = [0.5, 0.3, 0.2]
    scores[1, 954] = 1.0  # banana
    first, second = zoo.decode_predictions(scores, top=3)
    assert first == [
        ("n01443537", "goldfish", 0.5),
        ("n01440764", "tench", 0.30000001192092896),
        ("n15075141", "toilet tissue", 0.20000000298023224),
    ]
    assert second[0] == ("n07753592", "banana", 1.0)
    with pytest.raises(ValueError, match=r"expects a \(batch, 1000\) array"):
        zoo.decode_predictions(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="top must be an integer in"):
        zoo.decode_predictions(scores, top=0)
