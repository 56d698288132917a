"""Segmentation models (zoo/backbones/segmentation.py, `kind="segmentation"`): per-pixel
scores at the input size, the bilinear upsampling against its closed form, the heads' layout,
one training step, `.keras` round trips, `zoo.load` with Keras weights, and the errors.
The builds of every model and the training steps are `slow` (seconds each on 2 cores).

The three-backend build and training step is in tests/keras_attention/test_zoo_segmentation.py.
"""

import keras
import numpy as np
import pytest

import zoo
from keras_attention import layers as L
from zoo import models

SMALL = ("fcn_small", "danet_small", "ccnet_small", "ocnet_small", "pan_small")
SHAPE = (2, 64, 96, 3)  # H != W


def _images(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _labels(shape=SHAPE, classes=11, seed=1):
    return np.random.default_rng(seed).integers(0, classes, size=shape[:3])


def _align_corners_matrix(out_size, in_size):
    """PyTorch `interpolate(mode="bilinear", align_corners=True)` along one axis."""
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        source = i * (in_size - 1) / max(out_size - 1, 1)
        low = min(int(np.floor(source)), in_size - 1)
        high = min(low + 1, in_size - 1)
        matrix[i, low] += 1 - (source - low)
        matrix[i, high] += source - low
    return matrix


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL)
def test_small_model_outputs_probabilities_per_pixel_and_round_trips(name, tmp_path):
    model = zoo.build(name, input_shape=(None, None, 3))  # random weights, no warning
    assert model.task == "segmentation" and model.get_config()["task"] == "segmentation"
    x = _images()
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    assert probabilities.shape == (*SHAPE[:3], 11) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is models.ZooModel and loaded.task == "segmentation"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x, training=False)), probabilities
    )


def test_logits_are_the_head_output_upsampled_bilinearly_with_aligned_corners():
    model = models.build("danet_small", input_shape=(64, 96, 3), classifier_activation=None)
    probe = keras.Model(model.input, [model.get_layer("head-classifier").output, model.output])
    small, full = (keras.ops.convert_to_numpy(t) for t in probe(_images(), training=False))
    assert small.shape == (2, 8, 12, 11)
    rows, cols = _align_corners_matrix(64, 8), _align_corners_matrix(96, 12)
    expected = np.einsum("ip,bpqc,jq->bijc", rows, small, cols)
    np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_aux_head_trains_one_step_with_sparse_crossentropy():
    model = models.build(
        "ccnet_small", input_shape=(64, 96, 3), aux_head=True, classifier_activation=None
    )
    assert set(model.output) == {"segmentation", "aux"}
    assert model.get_layer("aux-classifier").input.shape[1:3] == (8, 12)  # stage 3, stride 8
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss={"segmentation": loss, "aux": loss},
        loss_weights={"segmentation": 1.0, "aux": 0.4},
    )
    gamma = model.get_layer("head-cca").gamma
    labels = _labels()
    result = model.train_on_batch(_images(), {"segmentation": labels, "aux": labels})
    assert np.all(np.isfinite(result))
    # gamma starts at 0; one step of SGD moves it, so the gradient reaches the attention
    assert abs(float(keras.ops.convert_to_numpy(gamma))) > 0


@pytest.mark.slow
def test_heads_are_built_from_the_attention_layers():
    expected = {
        "danet_small": [L.PositionAttention, L.DualChannelAttention],
        "ccnet_small": [L.CrissCrossAttention],
        "ocnet_small": [L.ObjectContext],
        "pan_small": [L.FeaturePyramidAttention] + [L.GlobalAttentionUpsample] * 3,
        "fcn_small": [],
    }
    attention = tuple(
        {L.PositionAttention, L.DualChannelAttention, L.CrissCrossAttention}
        | {L.ObjectContext, L.FeaturePyramidAttention, L.GlobalAttentionUpsample}
    )
    for name, classes in expected.items():
        model = models.build(name)
        found = [type(layer) for layer in model.layers if isinstance(layer, attention)]
        assert found == classes, name
    assert models.build("ccnet_small").get_layer("head-cca").recurrence == 2
    for mode in ("base", "pyramid", "asp"):
        model = models.build("ocnet_small", oc_mode=mode)
        assert model.get_layer("head-oc").mode == mode


@pytest.mark.slow
def test_resnet50_heads_sit_on_a_dilated_resnet50():
    model = models.build("danet_resnet50", input_shape=(96, 64, 3))
    assert model.get_layer("layer4-2-act3").output.shape[1:] == (12, 8, 2048)
    assert model.get_layer("layer4-1-conv2").dilation_rate == (4, 4)
    assert model.get_layer("head-pam").input.shape[-1] == 512  # C / 4, the official head
    assert model.output.shape[1:] == (96, 64, 21)
    # PAN as segmentation_models.pytorch: output stride 16
    pan = models.build("pan_resnet50", input_shape=(128, 160, 3))
    assert pan.get_layer("head-fpa").input.shape[1:3] == (8, 10)


def test_keras_weights_load_and_converted_checkpoints_are_refused(tmp_path, keras_home):
    source = models.build("fcn_small", classifier_activation=None)
    source.save_weights(tmp_path / "fcn.weights.h5")
    loaded = zoo.load("fcn_small", weights=tmp_path / "fcn.weights.h5", classifier_activation=None)
    x = _images((1, 64, 64, 3))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(source(x))
    )
    (tmp_path / "x.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="fcn_small loads Keras weights only"):
        zoo.load("fcn_small", weights=tmp_path / "x.safetensors")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="pan_small is a segmentation model: include_top"):
        models.build("pan_small", include_top=False)
    with pytest.raises(ValueError, match=r"oc_mode must be one of \('base', 'pyramid', 'asp'\)"):
        models.build("ocnet_small", oc_mode="dense")
    with pytest.raises(ValueError, match="FeaturePyramidAttention .* needs height >= 8"):
        models.build("pan_small", input_shape=(32, 96, 3))
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        models.build("fcn_small", num_classes=0)
    with pytest.raises(ValueError, match="task must be one of"):
        inputs = keras.Input((2,))
        models.ZooModel(inputs, keras.layers.Dense(1)(inputs), task="detection")


def test_registry_lists_the_segmentation_family():
    names = zoo.list_models("*_small")
    # the other *_small models are the video classifiers (tests/zoo/test_video.py)
    assert [n for n in names if zoo.model_info(n).family != "video"] == sorted(SMALL)
    for name in zoo.list_models():
        spec = zoo.model_info(name)
        assert (spec.kind == "segmentation") == (spec.family == "segmentation"), name
    assert zoo.model_info("danet_resnet50").num_classes == 21
    assert zoo.model_info("danet_small").default_input_shape == (64, 64, 3)


@pytest.mark.slow
def test_small_models_train_a_step_on_jax(tmp_path):
    """The three-backend cases of tests/keras_attention/test_zoo_segmentation.py on JAX, which
    CI runs only on the fast layer suite (TensorFlow and PyTorch run them in-process). DANet's
    per-branch classifiers add only 1x1 convolutions to `danet_small`, so they stay on
    TensorFlow and PyTorch; XLA's backend optimisation is off as in `make test`'s JAX run."""
    import os

    from tests.other_backends import run_pytest_on_backend

    pytest.importorskip("jax")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    test_file = os.path.join(root, "tests", "keras_attention", "test_zoo_segmentation.py")
    result = run_pytest_on_backend(
        "jax",
        ["-m", "slow", "-k", "small_segmentation_model", test_file],
        tmp_path,
        XLA_FLAGS="--xla_backend_optimization_level=0",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "5 passed" in result.stdout
