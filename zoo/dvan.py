"""DVAN, the diversified visual attention network (Zhao, Wu, Feng, Peng, Yan; 2016, IEEE
Transactions on Multimedia 2017), scaled to cluttered MNIST.

The image is cut into fixed multi-scale regions (the paper's "attention canvases"): by
default the whole image, a 3x3 grid of boxes of 0.7 of its side and a 2x2 grid of boxes of
half its side (14 regions; on 40x40 cluttered MNIST the 28x28 boxes are digit-sized, the
20x20 ones hold parts). `MultiScaleRegions` resamples each box to `region_size` squared by
area averaging (a fixed linear map per region), a small CNN shared by all regions encodes
each into a vector `f_i`, and `DiversifiedVisualAttention` runs an LSTM for `steps` steps:
at step t it scores the regions from its previous hidden state,

    e_{t,i} = v^T tanh(W_f f_i + W_h h_{t-1}),   a_t = softmax(e_t)   (over the regions),

reads the attention-weighted feature `sum_i a_{t,i} f_i` as its input and updates its
state. The class scores are the mean over the steps of a shared linear classifier of the
hidden states.

The diversity penalty discourages consecutive steps from attending to the same regions: the
overlap of the two distributions,

    D = mean over images and over t = 2..T of  sum_i min(a_{t,i}, a_{t-1,i}),

which is 1 for identical distributions and 0 for disjoint ones; `diversity_weight * D` is
added to the training loss (`add_loss`), so the plain `compile` + `fit` trains it on every
backend. With `uniform=True` the layer skips the scoring and reads the mean region feature
at every step (attention off): the baseline, otherwise the same network.

Choices made here (the paper's canvases are crops of a bird image at several scales and
its CNN is a VGG-16): the boxes and their scales above; a small region encoder; T = 3; the
overlap as the sum of elementwise minima and its weight 1 (the paper's own weighting was
not transcribed).
"""

import keras
import numpy as np
from keras import layers, ops

from attention_zoo_common.checks import check_positive_int

# (side as a fraction of the image's, boxes per side): evenly spaced boxes from edge to edge
REGION_GRIDS = ((1.0, 1), (0.7, 3), (0.5, 2))
ENCODER_WIDTHS = (8, 16, 32)


def area_resampling_matrix(start, length, in_size, out_size):
    """`(out_size, in_size)` weights resampling the interval `[start, start + length)` of a
    row of `in_size` pixels to `out_size` pixels by area averaging: output pixel `o` is the
    mean of the input over `[start + o * step, start + (o + 1) * step)`, `step = length /
    out_size` (pixel `j` covers `[j, j + 1)`). Each row sums to 1."""
    step = length / out_size
    low = start + step * np.arange(out_size)[:, None]
    pixels = np.arange(in_size)[None, :]
    overlap = np.clip(np.minimum(low + step, pixels + 1) - np.maximum(low, pixels), 0, None)
    return (overlap / step).astype("float32")


def region_boxes(height, width, grids=REGION_GRIDS):
    """The regions' boxes `(top, left, box height, box width)` in pixels, in order: for each
    `(fraction, n)` of `grids`, an n x n grid of boxes `fraction` of the image's height and
    width, row by row, spaced evenly from one edge to the other."""
    boxes = []
    for fraction, n in grids:
        box_height, box_width = fraction * height, fraction * width
        for top in np.linspace(0, height - box_height, n):
            for left in np.linspace(0, width - box_width, n):
                boxes.append((float(top), float(left), box_height, box_width))
    return boxes


def _check_grids(grids):
    message = (
        "`grids` must be a non-empty sequence of (fraction in (0, 1], positive integer "
        f"boxes per side) pairs, got grids={grids!r}."
    )
    try:
        pairs = [tuple(pair) for pair in grids]
    except TypeError:
        raise ValueError(message) from None
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise ValueError(message)
    for fraction, n in pairs:
        is_number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
        if not (is_number and 0 < fraction <= 1) or not isinstance(n, int) or n < 1:
            raise ValueError(message)
    return tuple((float(fraction), n) for fraction, n in pairs)


def diversity_penalty(attention):
    """The overlap of consecutive steps' attention distributions: `(batch, steps, regions)`
    -> scalar, the mean over images and over the `steps - 1` consecutive pairs of
    `sum_i min(a_{t,i}, a_{t-1,i})` (0 for one step)."""
    attention = ops.cast(attention, "float32")
    if attention.shape[1] is not None and attention.shape[1] < 2:
        return ops.zeros((), "float32")
    overlap = ops.sum(ops.minimum(attention[:, 1:], attention[:, :-1]), axis=-1)
    return ops.mean(overlap)


@keras.saving.register_keras_serializable(package="zoo")
class MultiScaleRegions(layers.Layer):
    """Fixed multi-scale boxes of the image, each resampled to `region_size` squared.

    Args:
        region_size: the side of every region in pixels.
        grids: `(fraction, n)` pairs: an n x n grid of boxes `fraction` of the image's
            height and width, spaced evenly from edge to edge (`region_boxes`).

    Call arguments:
        images: `(batch, height, width, channels)` with a known height and width.

    Returns:
        `(batch, regions, region_size, region_size, channels)`, the regions in the order
        of `region_boxes`, each the area average of its box.
    """

    def __init__(self, region_size=20, grids=REGION_GRIDS, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("region_size", region_size)
        self.region_size = region_size
        self.grids = _check_grids(grids)

    @property
    def num_regions(self):
        return sum(n * n for _, n in self.grids)

    def build(self, input_shape):
        if len(input_shape) != 4 or None in input_shape[1:3]:
            raise ValueError(
                "MultiScaleRegions needs images (batch, height, width, channels) of known "
                f"height and width (its boxes are fixed pixel boxes), got input_shape="
                f"{tuple(input_shape)}."
            )
        height, width = input_shape[1:3]
        size = self.region_size
        boxes = region_boxes(height, width, self.grids)
        self._rows = np.stack([area_resampling_matrix(t, h, height, size) for t, _, h, _ in boxes])
        self._cols = np.stack([area_resampling_matrix(c, w, width, size) for _, c, _, w in boxes])

    def call(self, images):
        rows = ops.cast(self._rows, images.dtype)
        cols = ops.cast(self._cols, images.dtype)
        x = ops.einsum("rsh,bhwc->brswc", rows, images)
        return ops.einsum("rtw,brswc->brstc", cols, x)

    def compute_output_shape(self, input_shape):
        size = self.region_size
        return (input_shape[0], self.num_regions, size, size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(region_size=self.region_size, grids=[list(g) for g in self.grids])
        return config


@keras.saving.register_keras_serializable(package="zoo")
class DiversifiedVisualAttention(layers.Layer):
    """DVAN's recurrent attention over region features, with its diversity penalty.

    Args:
        units: the LSTM's width.
        steps: attention steps T.
        attention_units: width of the scoring MLP (`W_f`, `W_h`, `v`).
        diversity_weight: weight of the overlap penalty between consecutive steps'
            attention (`diversity_penalty`), added with `add_loss`; 0 turns it off.
        uniform: attention off: every step reads the mean of the region features (the
            baseline); needs `diversity_weight=0`.

    Call arguments:
        features: `(batch, regions, channels)`, one vector per region.

    Returns:
        `(hidden, attention)`: the LSTM's hidden states `(batch, steps, units)` and the
        attention weights `(batch, steps, regions)` (each step's sum to 1).
    """

    def __init__(
        self, units=128, steps=3, attention_units=64, diversity_weight=1.0, uniform=False, **kwargs
    ):
        super().__init__(**kwargs)
        check_positive_int("units", units)
        check_positive_int("steps", steps)
        check_positive_int("attention_units", attention_units)
        is_number = isinstance(diversity_weight, (int, float)) and not isinstance(
            diversity_weight, bool
        )
        if not is_number or diversity_weight < 0:
            raise ValueError(
                "`diversity_weight` must be a number >= 0, got "
                f"diversity_weight={diversity_weight!r}."
            )
        if uniform and diversity_weight:
            raise ValueError(
                "`diversity_weight` must be 0 when uniform=True (uniform attention cannot "
                f"diversify), got diversity_weight={diversity_weight!r}."
            )
        self.units = units
        self.steps = steps
        self.attention_units = attention_units
        self.diversity_weight = float(diversity_weight)
        self.uniform = bool(uniform)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "DiversifiedVisualAttention needs features (batch, regions, channels) with a "
                f"known channel count, got input_shape={tuple(input_shape)}."
            )
        channels = input_shape[-1]
        self.cell = layers.LSTMCell(self.units, name="lstm", dtype=self.dtype_policy)
        self.cell.build((None, channels))
        if not self.uniform:
            self.feature_proj = layers.Dense(
                self.attention_units, name="feature_proj", dtype=self.dtype_policy
            )
            self.feature_proj.build(tuple(input_shape))
            self.state_proj = layers.Dense(
                self.attention_units, use_bias=False, name="state_proj", dtype=self.dtype_policy
            )
            self.state_proj.build((None, self.units))
            self.score = layers.Dense(1, use_bias=False, name="score", dtype=self.dtype_policy)
            self.score.build((None, None, self.attention_units))

    def _attention(self, projected, hidden, regions):
        if self.uniform:
            return ops.ones_like(projected[..., 0]) / regions
        energy = ops.tanh(projected + self.state_proj(hidden)[:, None, :])
        scores = ops.cast(self.score(energy)[..., 0], "float32")
        return ops.cast(ops.softmax(scores, axis=-1), projected.dtype)

    def call(self, features, training=False):
        regions = features.shape[1] if features.shape[1] is not None else ops.shape(features)[1]
        projected = features[..., :1] if self.uniform else self.feature_proj(features)
        hidden = ops.zeros((ops.shape(features)[0], self.units), features.dtype)
        states = [hidden, hidden]
        outputs, weights = [], []
        for _ in range(self.steps):
            attention = self._attention(projected, hidden, regions)
            glimpse = ops.einsum("br,brc->bc", attention, features)
            hidden, states = self.cell(glimpse, states, training=training)
            outputs.append(hidden)
            weights.append(attention)
        attention = ops.stack(weights, axis=1)
        if self.diversity_weight:
            self.add_loss(self.diversity_weight * diversity_penalty(attention))
        return ops.stack(outputs, axis=1), attention

    def compute_output_shape(self, input_shape):
        batch, regions = input_shape[:2]
        return (batch, self.steps, self.units), (batch, self.steps, regions)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            steps=self.steps,
            attention_units=self.attention_units,
            diversity_weight=self.diversity_weight,
            uniform=self.uniform,
        )
        return config


def _per_region(layer, x):
    """`layer` applied to each region of `(batch, regions, ...)`."""
    return layers.TimeDistributed(layer, name=f"{layer.name}-regions")(x)


def build_dvan(
    input_shape=(40, 40, 1),
    num_classes=10,
    classifier_activation="softmax",
    uniform=False,
    steps=3,
    units=128,
    attention_units=64,
    diversity_weight=1.0,
    region_size=16,
    grids=REGION_GRIDS,
    encoder_widths=ENCODER_WIDTHS,
    encoder_units=64,
    return_attention=False,
    name="dvan_mnist",
):
    """The DVAN classifier (see the module docstring).

    Args:
        input_shape: `(height, width, channels)`, height and width known.
        num_classes: classifier width.
        classifier_activation: `"softmax"` or `None` (logits).
        uniform: attention off (the baseline); then `diversity_weight` must be 0.
        steps, units, attention_units, diversity_weight: `DiversifiedVisualAttention`'s.
        region_size, grids: `MultiScaleRegions`'.
        encoder_widths: the region encoder's convolution widths (3x3, ReLU, each but the
            last followed by 2x2 max pooling).
        encoder_units: width of the encoder's last layer (flatten, dense, ReLU): the
            region's feature vector.
        return_attention: also output the attention weights `(batch, steps, regions)`.
        name: the model's name.

    Returns:
        A functional `keras.Model` from images to class scores (and attention weights).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    check_positive_int("num_classes", num_classes)
    check_positive_int("encoder_units", encoder_units)
    if not encoder_widths or not all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in encoder_widths
    ):
        raise ValueError(
            "`encoder_widths` must be a non-empty sequence of positive integers, got "
            f"encoder_widths={encoder_widths!r}."
        )
    inputs = keras.Input(input_shape, name="image")
    x = MultiScaleRegions(region_size, grids, name="regions")(inputs)
    for index, width in enumerate(encoder_widths, start=1):
        conv = layers.Conv2D(
            width, 3, padding="same", activation="relu", name=f"encoder_conv{index}"
        )
        x = _per_region(conv, x)
        if index < len(encoder_widths):
            x = _per_region(layers.MaxPooling2D(2, name=f"encoder_pool{index}"), x)
    x = _per_region(layers.Flatten(name="encoder_flatten"), x)
    x = _per_region(layers.Dense(encoder_units, activation="relu", name="encoder_fc"), x)
    hidden, attention = DiversifiedVisualAttention(
        units,
        steps,
        attention_units,
        diversity_weight=diversity_weight,
        uniform=uniform,
        name="attention",
    )(x)
    logits = layers.Dense(num_classes, name="fc", dtype="float32")(hidden)
    scores = layers.GlobalAveragePooling1D(name="step_mean", dtype="float32")(logits)
    if classifier_activation is not None:
        scores = layers.Activation(classifier_activation, name="predictions", dtype="float32")(
            scores
        )
    outputs = [scores, attention] if return_attention else scores
    return keras.Model(inputs, outputs, name=name)


def attention_model(model):
    """A model sharing `model`'s layers that maps its images to the attention weights
    `(batch, steps, regions)` of its `attention` layer."""
    return keras.Model(model.inputs, model.get_layer("attention").output[1])


def dvan_mnist(input_shape=(40, 40, 1), num_classes=10, **kwargs):
    return build_dvan(input_shape, num_classes, name="dvan_mnist", **kwargs)


def dvan_uniform_mnist(input_shape=(40, 40, 1), num_classes=10, **kwargs):
    kwargs.setdefault("diversity_weight", 0.0)
    return build_dvan(input_shape, num_classes, uniform=True, name="dvan_uniform_mnist", **kwargs)
