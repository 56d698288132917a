"""Fully convolutional attention (FCAN; Liu, Xia, Wang, Wang, Yu, Wang 2016), small.

A fully convolutional feature network reads the whole image; an attention head turns its
feature map into `num_steps` part-score maps, one per glimpse, and a softmax over each map's
`H' x W'` cells makes it a categorical distribution over locations. At each step a cell is
drawn from its distribution (training) or taken at its maximum (inference), and a glimpse is
read at full resolution around the cell's centre: a `glimpse_size` square crop of the input.
The same feature network reads each glimpse; a hidden layer reads each glimpse's flattened
features and the classifier reads their mean over the steps.

The locations are not differentiable: the attention head is trained by REINFORCE with a
learned baseline on the classification reward (1 if the prediction is right), through
`zoo.ram`'s `PolicyGradientTraining` (the surrogate loss with stop-gradients that lets the
plain `compile` + `fit` train it on every backend); the feature network, the hidden layer
and the classifier by the compiled cross-entropy. As in `zoo.ram`, the attention head and
the baseline read the feature map through a stop-gradient.

`locations="random"` is the baseline without attention: the same network and training, the
glimpse cells drawn uniformly at random (in training and at inference), no attention head.

Choices made here (the paper's networks are VGG/ResNet on fine-grained birds, cars and
dogs): three 3x3 convolutions (strides 1, 2, 2: a stride-4 feature map), a 3x3 + 1x1
convolutional attention head, one baseline for all steps from the pooled feature map, and
the classifier reading the glimpses only (no whole-image branch), so that what the glimpses
see is what the prediction rests on.
"""

import keras
from keras import layers, ops

from attention_zoo_common.checks import check_positive_int
from keras_attention.layers import HardCrop
from zoo.ram import REWARDS, PolicyGradientTraining

LOCATIONS = ("attention", "random")
# The feature network's convolutions: (filters, stride) for the default widths.
STRIDES = (1, 2, 2)
STRIDE = 4  # the feature map's stride in pixels: the product of STRIDES


def location_log_prob(location_logits, cells):
    """Log-probability of each chosen cell under the softmax of its step's scores.

    Args:
        location_logits: `(batch, steps, cells)` part scores, flattened over `H' x W'`.
        cells: `(batch, steps)` integer indices of the chosen cells.

    Returns:
        `(batch, steps)` log-probabilities.
    """
    log_p = ops.log_softmax(location_logits, axis=-1)
    cells = ops.cast(cells, "int32")[..., None]
    return ops.take_along_axis(log_p, cells, axis=-1)[..., 0]


def cell_centres(cells, stride=STRIDE):
    """Pixel `(row, column)` of the centres of feature-map cells `(..., 2)`: cell `i`
    covers pixels `[stride i, stride (i + 1))`, its centre pixel is `stride i + stride // 2`."""
    return cells * stride + stride // 2


@keras.saving.register_keras_serializable(package="zoo")
class FullyConvolutionalAttention(PolicyGradientTraining, keras.Model):
    """FCAN for image classification, trainable with `fit` on TF, JAX and PyTorch.

    Training (`training=True`) samples one cell per step and image and, in `compute_loss`,
    adds to the compiled loss (cross-entropy on the returned scores) the REINFORCE
    surrogate and the baseline regression (`zoo.ram.reinforce_with_baseline_loss`):

        loss = CE + mean_b (b - R)^2 - mean_b stop_grad(R - b) sum_t log p_t(cell_t)

    Sampling uses the model's own seed generator; call `reset_sampling(seed)` before an
    evaluation of the random baseline to make it repeatable (the attention model's
    inference is deterministic).

    Export: SavedModel only. TensorFlow lowers the glimpse crop's integer index arithmetic
    to `BitwiseAnd` and `Bitcast`, which neither LiteRT's builtin ops nor tf2onnx take, and
    the random baseline's cells to `StatelessMultinomial`
    (benchmarks/results/export_matrix.md).

    Args:
        num_classes: number of classes.
        num_steps: glimpses per image, `T`, one part-score map each.
        glimpse_size: side in pixels of each glimpse (a crop of the input centred on the
            chosen cell; zeros outside the image).
        filters: widths of the feature network's three 3x3 convolutions (strides 1, 2, 2).
        attention_units: width of the attention head's 3x3 convolution.
        hidden_units: width of the dense layer on each glimpse's flattened features.
        locations: `"attention"` (cells from the part-score maps) or `"random"` (cells
            drawn uniformly: the baseline without attention).
        reward: `"correct"` (1 for a right prediction, else 0, as the paper) or
            `"probability"` (the predicted probability of the true class).
        classifier_activation: `"softmax"` (return probabilities) or `None` (return
            log-probabilities, usable as logits by `from_logits=True` losses).
        seed: seed of the location sampler (an integer or `None`).
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Call arguments:
        images: `(batch, height, width, channels)` float images.
        training: sample the cells and record the REINFORCE terms (for `fit`).
        return_attention: also return the location distributions and the chosen cells.

    Returns:
        `(batch, num_classes)` probabilities (or log-probabilities); with
        `return_attention=True`, a tuple `(outputs, location_probabilities, cells)`:
        `(batch, num_steps, H', W')` softmax of each step's part scores (uniform for
        `locations="random"`) and `(batch, num_steps, 2)` int32 `(row, column)` of the
        chosen cells on the `H' x W'` feature map (`cell_centres` gives their pixels).
    """

    def __init__(
        self,
        num_classes=10,
        num_steps=3,
        glimpse_size=20,
        filters=(16, 32, 32),
        attention_units=32,
        hidden_units=128,
        locations="attention",
        reward="correct",
        classifier_activation="softmax",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_classes", num_classes)
        check_positive_int("num_steps", num_steps)
        check_positive_int("glimpse_size", glimpse_size)
        check_positive_int("attention_units", attention_units)
        check_positive_int("hidden_units", hidden_units)
        filters = tuple(filters)
        if len(filters) != len(STRIDES):
            raise ValueError(f"`filters` must give {len(STRIDES)} widths, got filters={filters!r}.")
        for width in filters:
            check_positive_int("filters", width)
        if locations not in LOCATIONS:
            raise ValueError(
                f"`locations` must be one of {LOCATIONS}, got locations={locations!r}."
            )
        if reward not in REWARDS:
            raise ValueError(f"`reward` must be one of {REWARDS}, got reward={reward!r}.")
        if classifier_activation not in ("softmax", None):
            raise ValueError(
                "`classifier_activation` must be 'softmax' or None, got "
                f"classifier_activation={classifier_activation!r}."
            )
        self.num_classes = num_classes
        self.num_steps = num_steps
        self.glimpse_size = glimpse_size
        self.filters = filters
        self.attention_units = attention_units
        self.hidden_units = hidden_units
        self.locations = locations
        self.reward = reward
        self.classifier_activation = classifier_activation
        self.seed = seed

        self.feature_convs = [
            layers.Conv2D(
                width, 3, strides=stride, padding="same", activation="relu", name=f"conv{i}"
            )
            for i, (width, stride) in enumerate(zip(filters, STRIDES), start=1)
        ]
        if locations == "attention":
            self.attention_conv = layers.Conv2D(
                attention_units, 3, padding="same", activation="relu", name="attention_conv"
            )
            self.part_scores = layers.Conv2D(num_steps, 1, name="part_scores")
            self.baseline = layers.Dense(1, name="baseline")
        self.crop = HardCrop((glimpse_size, glimpse_size), name="glimpse")
        self.glimpse_hidden = layers.Dense(hidden_units, activation="relu", name="glimpse_hidden")
        self.classifier = layers.Dense(num_classes, name="classifier")
        self.sampler = keras.random.SeedGenerator(seed, name="location_sampler")
        self._rl_terms = None

    def _features(self, x):
        for conv in self.feature_convs:
            x = conv(x)
        return x

    def location_logits(self, feature_map):
        """`(batch, num_steps, H' W')` part scores of each cell (zeros for `"random"`)."""
        shape = ops.shape(feature_map)
        batch, cells = shape[0], shape[1] * shape[2]
        if self.locations == "random":
            return ops.zeros((batch, self.num_steps, cells), "float32")
        scores = self.part_scores(self.attention_conv(ops.stop_gradient(feature_map)))
        scores = ops.cast(scores, "float32")  # sampled and normalised in float32
        return ops.reshape(ops.transpose(scores, (0, 3, 1, 2)), (batch, self.num_steps, cells))

    def call(self, images, training=False, return_attention=False):
        images = ops.cast(images, "float32")
        feature_map = self._features(images)
        shape = ops.shape(feature_map)
        batch, height, width = shape[0], shape[1], shape[2]
        logits = self.location_logits(feature_map)
        steps, cells = self.num_steps, height * width
        if training or self.locations == "random":
            flat = ops.reshape(logits, (batch * steps, cells))
            drawn = keras.random.categorical(flat, 1, seed=self.sampler)
            chosen = ops.reshape(ops.cast(drawn, "int32"), (batch, steps))
        else:
            chosen = ops.cast(ops.argmax(logits, axis=-1), "int32")
        chosen = ops.stop_gradient(chosen)
        cell_rows = chosen // ops.cast(width, "int32")
        cell_cols = chosen % ops.cast(width, "int32")
        # (batch * steps, 2) top-left corners of the glimpses, step-minor
        corners = ops.reshape(
            ops.stack([cell_rows, cell_cols], axis=-1) * STRIDE
            + (STRIDE // 2 - self.glimpse_size // 2),
            (batch * steps, 2),
        )
        repeated = ops.repeat(images, steps, axis=0)
        glimpses = self.crop([repeated, corners])
        # flattened, not pooled: where a stroke lies in the glimpse tells the digit
        flat_features = ops.reshape(self._features(glimpses), (batch * steps, -1))
        hidden = ops.reshape(self.glimpse_hidden(flat_features), (batch, steps, self.hidden_units))
        class_logits = ops.cast(self.classifier(ops.mean(hidden, axis=1)), "float32")
        log_probs = ops.log_softmax(class_logits, axis=-1)
        self._rl_terms = None
        if self.locations == "attention":
            # computed at inference too, so that `build_fcan` creates its weights
            baseline = self.baseline(ops.mean(ops.stop_gradient(feature_map), axis=(1, 2)))
        if training and self.locations == "attention":
            self._rl_terms = (location_log_prob(logits, chosen), baseline, log_probs)
        outputs = log_probs if self.classifier_activation is None else ops.exp(log_probs)
        if not return_attention:
            return outputs
        probabilities = ops.reshape(ops.softmax(logits, axis=-1), (batch, steps, height, width))
        return outputs, probabilities, ops.stack([cell_rows, cell_cols], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            num_steps=self.num_steps,
            glimpse_size=self.glimpse_size,
            filters=self.filters,
            attention_units=self.attention_units,
            hidden_units=self.hidden_units,
            locations=self.locations,
            reward=self.reward,
            classifier_activation=self.classifier_activation,
            seed=self.seed,
        )
        return config


def build_fcan(input_shape=(40, 40, 1), num_classes=10, **kwargs):
    """A built `FullyConvolutionalAttention` (weights created by one call on zeros)."""
    import numpy as np  # noqa: PLC0415

    kwargs.setdefault("name", "fcan")
    model = FullyConvolutionalAttention(num_classes=num_classes, **kwargs)
    model(np.zeros((1,) + tuple(input_shape), "float32"), training=False)
    return model


def fcan_mnist(input_shape, num_classes, **kwargs):
    """The registered FCAN: `num_steps=3` glimpses of 20x20 (defaults)."""
    return build_fcan(input_shape, num_classes, **kwargs)


def fcan_mnist_random(input_shape, num_classes, **kwargs):
    """Its baseline: the same network, glimpse cells drawn uniformly at random."""
    kwargs.setdefault("name", "fcan_random")
    return build_fcan(input_shape, num_classes, locations="random", **kwargs)
