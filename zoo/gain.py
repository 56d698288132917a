"""GAIN, the guided attention inference network (Li, Wu, Peng, Ernst, Fu; CVPR 2018), as a
training wrapper around any functional zoo classifier.

During training the wrapper computes the Grad-CAM map `A` of the target (true) class at a
chosen convolutional layer, inside the differentiated loss:

    A = ReLU(sum_k w_k F_k),   w_k = mean_{i,j} d y_c / d F_k[i, j]

(`F` the layer's feature maps, `y_c` the class logit), upsamples it bilinearly to the image
size and normalises it to [0, 1] per image. Its soft mask `T(A) = sigmoid(w (A - s))`
(`w = 10`, `s = 0.5`, the paper's) erases what the network attends to, and the
attention-mining loss is the mean softmax score of the target class on what is left,
`I - T(A) * I`: to lower it, the map must cover every part of the object the classifier
could still use. The total loss is `cls + alpha * am`, plus, where pixel-level masks `H` are
given, the paper's extended supervision `alpha_e * mean((A - H)^2)`.

`d y_c / d F` is a gradient inside the training step, so the gradient the optimizer sees is
a gradient of a gradient: `_score_gradient` has the one backend-specific line for each of
TensorFlow (a nested `tf.GradientTape`), JAX (`jax.grad` inside the trainer's stateless
`value_and_grad`) and PyTorch (`torch.autograd.grad(create_graph=True)`). Everything else
is `keras.ops`, and the terms are added in `compute_loss`, so the plain
`compile` + `fit` trains it on all three backends.
"""

import keras
import numpy as np
from keras import ops

# The paper's soft-mask sharpness w and threshold s.
MASK_SCALE = 10.0
MASK_THRESHOLD = 0.5
_EPSILON = 1e-8


def soft_mask(attention, scale=MASK_SCALE, threshold=MASK_THRESHOLD):
    """`T(A) = sigmoid(scale * (A - threshold))`, elementwise."""
    return ops.sigmoid(scale * (attention - threshold))


def normalize_maps(maps):
    """Each map of `(batch, height, width)` rescaled to [0, 1] (minimum to 0, maximum to 1;
    a constant map becomes 0)."""
    low = ops.min(maps, axis=(1, 2), keepdims=True)
    high = ops.max(maps, axis=(1, 2), keepdims=True)
    return (maps - low) / (high - low + _EPSILON)


def attention_mining_loss(masked_logits, labels):
    """Mean softmax score of each image's class `labels` from the logits of its masked
    image, `(batch, classes)` -> scalar."""
    probs = ops.softmax(ops.cast(masked_logits, "float32"), axis=-1)
    return ops.mean(ops.take_along_axis(probs, _as_labels(labels)[:, None], axis=1))


def mass_in_box(maps, boxes):
    """Share of each map's mass inside its box: numpy `(N, H, W)` non-negative maps and
    `(N, 4)` boxes `(top, left, bottom, right)` (bottom and right exclusive) -> `(N,)`, NaN
    for a map without mass."""
    maps = np.asarray(maps, np.float64)
    boxes = np.asarray(boxes)
    if maps.ndim != 3 or boxes.shape != (len(maps), 4):
        raise ValueError(
            f"`maps` must be (N, H, W) and `boxes` (N, 4), got {maps.shape} and {boxes.shape}."
        )
    inside = np.array([m[t:b, lft:r].sum() for m, (t, lft, b, r) in zip(maps, boxes)])
    total = maps.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def _as_labels(labels):
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] != 1:
        labels = ops.argmax(labels, axis=-1)
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def _class_score(logits, labels):
    """Sum over the batch of each image's logit of its class (each image's gradient is that
    of its own logit)."""
    return ops.sum(ops.take_along_axis(ops.cast(logits, "float32"), labels[:, None], axis=1))


def _score_gradient(head, features, labels, create_graph):
    """`d y_c / d features`: the gradient of each image's class logit (the `head` maps the
    features to logits) with respect to its feature maps. With `create_graph`, the result
    stays differentiable (the training step differentiates through it)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 - the backend's own autodiff

        with tf.GradientTape() as tape:
            tape.watch(features)
            score = _class_score(head(features, training=False), labels)
        grad = tape.gradient(score, features)
    elif backend == "jax":
        import jax  # noqa: PLC0415

        grad = jax.grad(lambda f: _class_score(head(f, training=False), labels))(features)
    elif backend == "torch":
        import torch  # noqa: PLC0415

        with torch.enable_grad():
            if not features.requires_grad:
                features = features.detach().requires_grad_(True)
            score = _class_score(head(features, training=False), labels)
            (grad,) = torch.autograd.grad(score, features, create_graph=create_graph)
    else:
        raise NotImplementedError(
            f"GAIN needs gradients inside the training step; it has them for the "
            f"tensorflow, jax and torch backends, not for the {backend!r} backend."
        )
    return grad if create_graph else ops.stop_gradient(grad)


class _Cut:
    """The classifier cut at the Grad-CAM layer: image -> feature maps -> logits. A plain
    object, so Keras does not track the two halves: their layers are the classifier's, saved
    once with it."""

    def __init__(self, features, head):
        self.features = features
        self.head = head


def _conv_layer_names(model):
    return [
        layer.name
        for layer in model.layers
        if len(layer.output.shape) == 4 and not isinstance(layer, keras.layers.InputLayer)
    ]


@keras.saving.register_keras_serializable(package="zoo")
class GAIN(keras.Model):
    """Guided attention inference network: trains `classifier` with Grad-CAM attention
    mining (Li et al., CVPR 2018).

    At inference the model is the classifier (its logits, or their softmax). In training
    (`fit`), `compute_loss` adds to the compiled classification loss the attention-mining
    term `alpha * am` and, for inputs that carry masks, `alpha_e * mean((A - H)^2)` (see the
    module docstring). The target class of the Grad-CAM map is the true label.

    Args:
        classifier: a functional `keras.Model` with one image input `(batch, H, W, C)` that
            returns class *logits* `(batch, classes)`; its layers are trained in place.
        layer_name: the layer whose output feature maps Grad-CAM weighs; its output must be
            4-D `(batch, h, w, channels)` and every path from the image to the logits must
            pass through it.
        alpha: weight of the attention-mining loss (the paper: 1).
        alpha_e: weight of the pixel-level supervision (0: none).
        mask_scale: `w` of the soft mask (the paper: 10).
        mask_threshold: `s` of the soft mask, in [0, 1] (the paper: 0.5).
        differentiable_weights: let the loss differentiate through the Grad-CAM channel
            weights (a second-order gradient, the paper's trainable attention map); `False`
            treats them as constants.
        classifier_activation: `None` (return logits) or `"softmax"`.
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Call arguments:
        inputs: images `(batch, H, W, C)`, or a dict `{"image": images, "mask": masks}` with
            pixel-level masks `(batch, H, W)` in [0, 1] (used by the loss when
            `alpha_e > 0`).
        training: training mode (records what `compute_loss` needs).

    Returns:
        `(batch, classes)` logits (or probabilities).
    """

    def __init__(
        self,
        classifier,
        layer_name,
        alpha=1.0,
        alpha_e=0.0,
        mask_scale=MASK_SCALE,
        mask_threshold=MASK_THRESHOLD,
        differentiable_weights=True,
        classifier_activation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(classifier, keras.Model) or not hasattr(classifier, "_nodes_by_depth"):
            raise ValueError(
                f"`classifier` must be a functional keras.Model, got {type(classifier).__name__}."
            )
        if len(classifier.inputs) != 1 or len(classifier.outputs) != 1:
            raise ValueError(
                "`classifier` must have one image input and one logits output, got "
                f"{len(classifier.inputs)} inputs and {len(classifier.outputs)} outputs."
            )
        if len(classifier.outputs[0].shape) != 2:
            raise ValueError(
                "`classifier` must return (batch, classes) logits, got output shape "
                f"{classifier.outputs[0].shape}."
            )
        self._check_layer(classifier, layer_name)
        for name, value in (("alpha", alpha), ("alpha_e", alpha_e)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {name}={value!r}.")
        if not isinstance(mask_scale, (int, float)) or mask_scale <= 0:
            raise ValueError(f"`mask_scale` must be a number > 0, got mask_scale={mask_scale!r}.")
        if not isinstance(mask_threshold, (int, float)) or not 0 <= mask_threshold <= 1:
            raise ValueError(
                f"`mask_threshold` must be in [0, 1], got mask_threshold={mask_threshold!r}."
            )
        if classifier_activation not in (None, "softmax"):
            raise ValueError(
                "`classifier_activation` must be None or 'softmax', got "
                f"classifier_activation={classifier_activation!r}."
            )
        self.classifier = classifier
        self.layer_name = layer_name
        self.alpha = float(alpha)
        self.alpha_e = float(alpha_e)
        self.mask_scale = float(mask_scale)
        self.mask_threshold = float(mask_threshold)
        self.differentiable_weights = bool(differentiable_weights)
        self.classifier_activation = classifier_activation
        feature_maps = classifier.get_layer(layer_name).output
        features = keras.Model(classifier.inputs[0], feature_maps, name="gain_features")
        try:
            head = keras.Model(feature_maps, classifier.outputs[0], name="gain_head")
        except ValueError as error:
            raise ValueError(
                f"`layer_name`: the classifier's logits do not depend on the image through "
                f"layer {layer_name!r} alone ({error})."
            ) from None
        self._cut = _Cut(features, head)
        self._gain_terms = None
        self.built = True

    @staticmethod
    def _check_layer(classifier, layer_name):
        convolutional = _conv_layer_names(classifier)
        try:
            layer = classifier.get_layer(layer_name)
        except ValueError:
            raise ValueError(
                f"`layer_name`: the classifier has no layer named {layer_name!r}; layers with "
                f"4-D feature maps: {', '.join(convolutional)}."
            ) from None
        if len(layer.output.shape) != 4 or isinstance(layer, keras.layers.InputLayer):
            raise ValueError(
                f"`layer_name` must name a layer with 4-D (batch, height, width, channels) "
                f"feature maps, such as a convolution; {layer_name!r} "
                f"({type(layer).__name__}) outputs shape {layer.output.shape}. Layers with "
                f"4-D feature maps: {', '.join(convolutional)}."
            )

    @property
    def features(self):
        """The classifier from the image to `layer_name`'s feature maps (shared layers)."""
        return self._cut.features

    @property
    def head(self):
        """The classifier from `layer_name`'s feature maps to the logits (shared layers)."""
        return self._cut.head

    # -- attention ------------------------------------------------------------------

    def _image_and_masks(self, inputs):
        if isinstance(inputs, dict):
            return inputs["image"], inputs.get("mask")
        return inputs, None

    def _attention(self, images, features, labels, create_graph):
        """Normalised Grad-CAM maps at the image size, `(batch, H, W)` in [0, 1]."""
        return normalize_maps(self._grad_cam(images, features, labels, create_graph))

    def _grad_cam(self, images, features, labels, create_graph):
        grad = _score_gradient(self.head, features, labels, create_graph)
        weights = ops.mean(ops.cast(grad, "float32"), axis=(1, 2), keepdims=True)
        cam = ops.relu(ops.sum(weights * ops.cast(features, "float32"), axis=-1))
        size = tuple(images.shape[1:3])
        if None in size:
            size = tuple(ops.shape(images)[1:3])
        return ops.image.resize(cam[..., None], size, interpolation="bilinear")[..., 0]

    def grad_cam(self, images, labels=None, normalize=False):
        """Grad-CAM maps of class `labels` (default: the predicted class), upsampled
        bilinearly to the image size: `(batch, H, W)`, non-negative (in [0, 1] per image
        with `normalize=True`)."""
        images = ops.convert_to_tensor(images, "float32")
        features = self.features(images, training=False)
        if labels is None:
            labels = ops.argmax(self.head(features, training=False), axis=-1)
        cam = self._grad_cam(images, features, _as_labels(labels), create_graph=False)
        return normalize_maps(cam) if normalize else cam

    # -- forward and loss -----------------------------------------------------------

    def call(self, inputs, training=False):
        images, masks = self._image_and_masks(inputs)
        features = self.features(images, training=training)
        logits = self.head(features, training=training)
        self._gain_terms = (images, features, masks) if training else None
        if self.classifier_activation == "softmax":
            return ops.softmax(ops.cast(logits, "float32"), axis=-1)
        return logits

    def gain_losses(self, images, features, labels, masks=None):
        """The attention-mining loss and the pixel-level one (`None` without `masks`),
        each a scalar, for images whose feature maps at `layer_name` are `features`."""
        labels = _as_labels(labels)
        attention = self._attention(images, features, labels, self.differentiable_weights)
        mask = soft_mask(attention, self.mask_scale, self.mask_threshold)[..., None]
        images = ops.cast(images, "float32")
        masked_logits = self.classifier(images - mask * images, training=True)
        mining = attention_mining_loss(masked_logits, labels)
        if masks is None:
            return mining, None
        masks = ops.cast(masks, "float32")
        if len(masks.shape) == 4:
            masks = masks[..., 0]
        return mining, ops.mean(ops.square(attention - masks))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        terms, self._gain_terms = self._gain_terms, None
        if not training or terms is None or y is None or self.alpha == self.alpha_e == 0:
            return loss
        images, features, masks = terms
        if self.alpha_e == 0:
            masks = None
        mining, pixel = self.gain_losses(images, features, y, masks)
        loss = loss + self.alpha * mining
        if pixel is not None:
            loss = loss + self.alpha_e * pixel
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "layer_name": self.layer_name,
            "alpha": self.alpha,
            "alpha_e": self.alpha_e,
            "mask_scale": self.mask_scale,
            "mask_threshold": self.mask_threshold,
            "differentiable_weights": self.differentiable_weights,
            "classifier_activation": self.classifier_activation,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


# The Grad-CAM layer of `gain_mnist_cnn`: the classifier CNN's last convolution (15x15 on
# 60x60 images).
MNIST_CNN_LAYER = "conv3"


def gain_mnist_cnn(input_shape=(60, 60, 1), num_classes=10, classifier_activation="softmax", **kw):
    """GAIN around the zoo's MNIST classifier CNN (`zoo.stn_cnn.build_mnist_cnn`), Grad-CAM
    at its last convolution; `**kw` are `GAIN`'s arguments."""
    from zoo.stn_cnn import build_mnist_cnn  # noqa: PLC0415

    classifier = build_mnist_cnn(input_shape, num_classes, classifier_activation=None)
    return GAIN(
        classifier,
        kw.pop("layer_name", MNIST_CNN_LAYER),
        classifier_activation=classifier_activation,
        name="gain_mnist_cnn",
        **kw,
    )
