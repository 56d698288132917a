"""The zoo's segmentation models on every backend: each small model (the attention heads of
DANet, CCNet, OCNet and PAN and the FCN baseline on a dilated ResNet) builds for a non-square
image, returns per-pixel scores at the input's size and trains one step with sparse
categorical crossentropy on the main and auxiliary outputs; so does DANet in pytorchcv's
layout (per-branch classifiers, the architecture of `danet_resnet50`'s Cityscapes weights).

This module sits in the layer suite because that suite runs on TensorFlow, JAX and PyTorch
in CI; the cases are `slow` (a compiled training step each), so CI runs them on TensorFlow
(`make test-slow`), PyTorch (`make test-oracle`) and, through a subprocess, JAX
(tests/zoo/test_segmentation.py). The rest of the segmentation tests are in that file.
"""

import keras
import numpy as np
import pytest

SMALL = ("fcn_small", "danet_small", "ccnet_small", "ocnet_small", "pan_small")
ATTENTION_LAYER = {
    "danet_small": "head-pam",
    "ccnet_small": "head-cca",
    "pan_small": "head-fpa",
    "ocnet_small": "head-oc",
    "fcn_small": "head-conv5-conv",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL)
def test_small_segmentation_model_trains_one_step(name):
    from zoo import models

    model = models.build(name, input_shape=(64, 80, 3), aux_head=True, classifier_activation=None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss={"segmentation": loss, "aux": loss},
        loss_weights={"segmentation": 1.0, "aux": 0.4},
    )
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 64, 80, 3)).astype("float32")
    labels = rng.integers(0, 11, size=(2, 64, 80))
    head = model.get_layer(ATTENTION_LAYER[name])
    before = [keras.ops.convert_to_numpy(w).copy() for w in head.trainable_weights]
    outputs = model(images, training=False)
    assert tuple(outputs["segmentation"].shape) == (2, 64, 80, 11)
    assert tuple(outputs["aux"].shape) == (2, 64, 80, 11)
    assert keras.backend.standardize_dtype(outputs["segmentation"].dtype) == "float32"
    losses = model.train_on_batch(images, {"segmentation": labels, "aux": labels})
    assert np.all(np.isfinite(losses))
    after = [keras.ops.convert_to_numpy(w) for w in head.trainable_weights]
    assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(after, before))


@pytest.mark.slow
def test_danet_branch_classifiers_train_one_step():
    """DANet in pytorchcv's layout (`branch_classifiers=True`, the architecture of
    `danet_resnet50`'s Cityscapes weights): `aux_head=True` returns the main map and each
    branch's own, and one step on the three losses updates both branch classifiers."""
    from zoo import models

    model = models.build(
        "danet_small",
        input_shape=(64, 80, 3),
        aux_head=True,
        branch_classifiers=True,
        classifier_activation=None,
    )
    outputs = ("segmentation", "position", "channel")
    assert sorted(model.output) == sorted(outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=dict.fromkeys(outputs, loss))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 64, 80, 3)).astype("float32")
    labels = rng.integers(0, 11, size=(2, 64, 80))
    branches = [model.get_layer(name) for name in ("head-conv6", "head-conv7")]
    before = [keras.ops.convert_to_numpy(layer.kernel).copy() for layer in branches]
    losses = model.train_on_batch(images, dict.fromkeys(outputs, labels))
    assert np.all(np.isfinite(losses))
    for layer, kernel in zip(branches, before):
        assert np.max(np.abs(keras.ops.convert_to_numpy(layer.kernel) - kernel)) > 0
