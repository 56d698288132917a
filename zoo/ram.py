"""The recurrent attention model (RAM; Mnih, Heess, Graves, Kavukcuoglu, NIPS 2014).

At each of `num_glimpses` steps the model looks at the image through a retina-like glimpse
sensor (`keras_attention.layers.GlimpseSensor`) at location `l_t`, updates a recurrent
state, and samples the next location from a Gaussian policy; after the last glimpse it
classifies. The locations are not differentiable, so the location network is trained by
REINFORCE with a learned baseline, written as a surrogate loss with stop-gradients so that
the plain `model.compile(optimizer, loss=...)` + `model.fit` trains it on every backend.

Choices made here (the paper leaves them open or they vary between implementations):
- first glimpse at the image centre, `l_0 = (0, 0)`; `num_glimpses - 1` sampled locations;
- location policy `l ~ N(mu, std^2)` with `mu = tanh(W h)` and a fixed `std` (0.1 by
  default: with `l` in [-1, 1] spanning the image, about 3 pixels on 60x60), samples
  clipped to [-1, 1]; the location and baseline networks read `stop_gradient(h)`, so the
  core network learns from the classification loss alone (a common, more stable variant);
- core network: the paper's rectifier RNN `h = relu(W_h h + W_g g)` (`core="rnn"`), or an
  LSTM (`core="lstm"`);
- reward 1 for a correct classification after the last glimpse, else 0;
- optional dropout (`dropout`, training only) on each glimpse vector and on the last state
  before the classifier, not on the state the location policy reads (not in the paper: a
  regulariser for training sets much smaller than its 60,000 digits).
"""

import math

import keras
import numpy as np
from keras import layers, ops

from attention_zoo_common.checks import check_positive_int
from keras_attention.layers import GlimpseSensor

CORES = ("rnn", "lstm")
REWARDS = ("correct", "probability")
GLIMPSE_NETWORKS = ("dense", "conv")


def reinforce_with_baseline_loss(labels, log_pi, baseline, log_probs, reward="correct"):
    """Baseline regression + REINFORCE surrogate, from one sampled sequence of actions per
    example:

        mean_b sum_t (b_t - R)^2 - mean_b sum_t stop_grad(R - b_t) log pi(a_t)

    whose gradient in the policy's parameters is the REINFORCE estimate
    `-(R - b) grad log pi` and in the baseline's that of its squared error.

    Args:
        labels: `(batch,)` integer labels (or `(batch, num_classes)` one-hot).
        log_pi: `(batch, T)` log-probabilities of the sampled actions.
        baseline: `(batch, T)` baseline predictions (or `(batch, 1)`: one for all steps).
        log_probs: `(batch, num_classes)` class log-probabilities of the final prediction.
        reward: `"correct"` (`R` = 1 for a right prediction, else 0) or `"probability"`
            (the predicted probability of the true class, held constant).
    """
    labels = ops.convert_to_tensor(labels)
    # float32 whatever the layers' compute dtype (mixed precision)
    log_pi, baseline, log_probs = (
        ops.cast(ops.convert_to_tensor(t), "float32") for t in (log_pi, baseline, log_probs)
    )
    if len(labels.shape) == 2:
        labels = ops.argmax(labels, axis=-1)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    if reward == "probability":
        reward = ops.exp(ops.take_along_axis(log_probs, labels[:, None], axis=1))
    else:
        predicted = ops.cast(ops.argmax(log_probs, axis=-1), "int32")
        reward = ops.cast(ops.equal(predicted, labels), "float32")[:, None]
    reward = ops.stop_gradient(reward)
    advantage = ops.stop_gradient(reward - baseline)
    surrogate = -ops.mean(ops.sum(advantage * log_pi, axis=1))
    regression = ops.mean(ops.sum(ops.square(baseline - reward), axis=1))
    return surrogate + regression


class PolicyGradientTraining:
    """What a `keras.Model` with sampled (non-differentiable) actions needs to train by
    REINFORCE with a baseline under plain `compile` + `fit`, on every backend.

    The model's `call(..., training=True)` stores `(log_pi, baseline, log_probs)` in
    `self._rl_terms` (see `reinforce_with_baseline_loss`); `compute_loss` adds their loss to
    the compiled one and consumes them. The model also has `self.reward` and a
    `keras.random.SeedGenerator` `self.sampler`.
    """

    def reset_sampling(self, seed=0):
        """Restart the action sampler from `seed`, for a repeatable evaluation."""
        state = self.sampler.state
        self.sampler.state.assign(ops.cast(ops.convert_to_tensor([int(seed), 0]), state.dtype))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        terms, self._rl_terms = self._rl_terms, None
        if not training or terms is None or y is None:
            return loss
        return loss + self.reinforce_loss(y, *terms)

    def reinforce_loss(self, labels, log_pi, baseline, log_probs):
        """`reinforce_with_baseline_loss` with the model's `reward`."""
        return reinforce_with_baseline_loss(labels, log_pi, baseline, log_probs, self.reward)


@keras.saving.register_keras_serializable(package="zoo")
class RecurrentAttentionModel(PolicyGradientTraining, keras.Model):
    """RAM for image classification, trainable with `fit` on TF, JAX and PyTorch.

    Training (`training=True`) samples one location sequence per image and, in
    `compute_loss`, adds to the compiled loss (cross-entropy on the returned scores)
    the REINFORCE surrogate and the baseline regression:

        loss = CE + mean_b sum_t (b_t - R)^2 - mean_b sum_t stop_grad(R - b_t) log pi(l_t)

    with `R` = 1 if the prediction is right (`reward="correct"`, the paper's) or `R` = the
    predicted probability of the true class (`reward="probability"`: a reward that keeps
    rewarding better glimpses once the prediction is right). Inference averages the class
    probabilities of `mc_samples` sampled location sequences (`mc_samples=0`: one pass along
    the policy means, deterministic). Sampling uses the model's own seed generator; call
    `reset_sampling(seed)` before an evaluation to make it repeatable.

    Args:
        num_classes: number of classes.
        num_glimpses: glimpses per image, `T` (the paper: 4 to 8).
        glimpse_size: side of each glimpse patch in pixels (paper: 12 on 60x60).
        num_scales: patches per glimpse, each `scale_factor` times larger (paper: 3).
        scale_factor: ratio between successive patch sides.
        glimpse_units: width of the glimpse-pixel and location branches (paper: 128).
        glimpse_network: `"dense"` (the patches' pixels straight into the glimpse-pixel
            dense layer, as the paper) or `"conv"` (three 3x3 convolutions, 32, 64 and 64
            filters, the last two with stride 2, over the patches with the scales stacked
            as channels, before that layer: weights shared across the patch, as in the
            glimpse network of Ba et al. 2015).
        hidden_units: width of the glimpse vector and of the core state (paper: 256).
        core: `"rnn"` (rectifier RNN, as the paper) or `"lstm"`.
        location_std: fixed standard deviation of the Gaussian location policy.
        dropout: dropout rate on the glimpse vectors and on the classifier's input, in
            training only (`0`: none, as the paper).
        reward: `"correct"` (1 for a right prediction, else 0, as the paper) or
            `"probability"` (the predicted probability of the true class, held constant
            for the gradient).
        mc_samples: location sequences averaged at inference (`0`: follow the means).
        classifier_activation: `"softmax"` (return probabilities) or `None` (return
            log-probabilities, usable as logits by `from_logits=True` losses).
        seed: seed of the sampling generator (an integer or `None`).
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Call arguments:
        images: `(batch, height, width, channels)` float images.
        training: sample one sequence and record the REINFORCE terms (for `fit`).
        return_locations: also return the glimpse locations.

    Returns:
        `(batch, num_classes)` probabilities (or log-probabilities); with
        `return_locations=True`, also the `(batch, num_glimpses, 2)` locations `(y, x)` in
        [-1, 1] (for `mc_samples > 1`, those of the first sample).
    """

    def __init__(
        self,
        num_classes=10,
        num_glimpses=6,
        glimpse_size=12,
        num_scales=3,
        scale_factor=2,
        glimpse_units=128,
        hidden_units=256,
        core="rnn",
        glimpse_network="dense",
        location_std=0.1,
        dropout=0.0,
        reward="correct",
        mc_samples=1,
        classifier_activation="softmax",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if core not in CORES:
            raise ValueError(f"`core` must be one of {CORES}, got core={core!r}.")
        check_positive_int("num_glimpses", num_glimpses)
        if not location_std > 0:
            raise ValueError(f"`location_std` must be > 0, got {location_std!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        if glimpse_network not in GLIMPSE_NETWORKS:
            raise ValueError(
                f"`glimpse_network` must be one of {GLIMPSE_NETWORKS}, got "
                f"glimpse_network={glimpse_network!r}."
            )
        if reward not in REWARDS:
            raise ValueError(f"`reward` must be one of {REWARDS}, got reward={reward!r}.")
        if not isinstance(mc_samples, int) or mc_samples < 0:
            raise ValueError(f"`mc_samples` must be an integer >= 0, got {mc_samples!r}.")
        if classifier_activation not in ("softmax", None):
            raise ValueError(
                f"`classifier_activation` must be 'softmax' or None, got {classifier_activation!r}."
            )
        self.num_classes = num_classes
        self.num_glimpses = num_glimpses
        self.glimpse_size = glimpse_size
        self.num_scales = num_scales
        self.scale_factor = scale_factor
        self.glimpse_units = glimpse_units
        self.glimpse_network = glimpse_network
        self.hidden_units = hidden_units
        self.core = core
        self.location_std = float(location_std)
        self.dropout = float(dropout)
        self.reward = reward
        self.mc_samples = mc_samples
        self.classifier_activation = classifier_activation
        self.seed = seed

        self.glimpse_sensor = GlimpseSensor(glimpse_size, num_scales, scale_factor, name="sensor")
        self.glimpse_convs = (
            []
            if glimpse_network == "dense"
            else [
                layers.Conv2D(
                    filters,
                    3,
                    strides=strides,
                    padding="same",
                    activation="relu",
                    name=f"glimpse_conv{i}",
                )
                for i, (filters, strides) in enumerate(((32, 1), (64, 2), (64, 2)), start=1)
            ]
        )
        self.glimpse_pixels = layers.Dense(glimpse_units, activation="relu", name="glimpse_hg")
        self.glimpse_where = layers.Dense(glimpse_units, activation="relu", name="glimpse_hl")
        self.glimpse_what_out = layers.Dense(hidden_units, name="glimpse_g_what")
        self.glimpse_where_out = layers.Dense(hidden_units, use_bias=False, name="glimpse_g_where")
        if core == "rnn":
            self.core_cell = layers.SimpleRNNCell(hidden_units, activation="relu", name="core")
        else:
            self.core_cell = layers.LSTMCell(hidden_units, name="core")
        self.emission = layers.Dense(2, activation="tanh", name="location")
        self.baseline = layers.Dense(1, name="baseline")
        self.classifier = layers.Dense(num_classes, name="classifier")
        self.glimpse_dropout = layers.Dropout(self.dropout, seed=seed, name="glimpse_dropout")
        # A different seed, or with a fixed seed the state's mask repeats the first glimpse's.
        self.state_dropout = layers.Dropout(
            self.dropout, seed=None if seed is None else seed + 1, name="state_dropout"
        )
        self.sampler = keras.random.SeedGenerator(seed, name="location_sampler")
        self._rl_terms = None

    # -- sampling -------------------------------------------------------------------

    def log_prob(self, sample, mean):
        """Log-density of the Gaussian policy, summed over `(y, x)`: `(batch,)`."""
        z = (sample - mean) / self.location_std
        return ops.sum(-0.5 * z * z, axis=-1) - 2.0 * (
            math.log(self.location_std) + 0.5 * math.log(2.0 * math.pi)
        )

    # -- forward ----------------------------------------------------------------------

    def _glimpse_features(self, images, location):
        """What the glimpse-pixel dense layer reads: `(batch, features)`."""
        patches = self.glimpse_sensor([images, location])  # (B, scales, g, g, C)
        batch = ops.shape(patches)[0]
        if self.glimpse_convs:
            g, channels = self.glimpse_size, patches.shape[-1]
            # One g x g image per glimpse, channel index = scale * C + c.
            x = ops.reshape(
                ops.transpose(patches, (0, 2, 3, 1, 4)), (batch, g, g, self.num_scales * channels)
            )
            for conv in self.glimpse_convs:
                x = conv(x)
            return ops.reshape(x, (batch, -1))
        return ops.reshape(patches, (batch, -1))

    def _glimpse(self, images, location):
        pixels = self._glimpse_features(images, location)
        return ops.relu(
            self.glimpse_what_out(self.glimpse_pixels(pixels))
            + self.glimpse_where_out(self.glimpse_where(location))
        )

    def _unroll(self, images, sample, training=False):
        batch = ops.shape(images)[0]
        location = ops.zeros((batch, 2), dtype="float32")
        h = ops.zeros((batch, self.hidden_units), dtype="float32")
        state = [h] if self.core == "rnn" else [h, ops.zeros_like(h)]
        locations, log_pis, baselines = [location], [], []
        for t in range(self.num_glimpses):
            glimpse = self.glimpse_dropout(self._glimpse(images, location), training=training)
            h, state = self.core_cell(glimpse, state)
            if t == self.num_glimpses - 1:
                break
            detached = ops.stop_gradient(h)
            mean = self.emission(detached)
            if sample:
                noise = keras.random.normal(ops.shape(mean), seed=self.sampler)
                drawn = ops.stop_gradient(mean + self.location_std * noise)
                log_pis.append(self.log_prob(drawn, mean))
                baselines.append(self.baseline(detached)[:, 0])
                location = ops.clip(drawn, -1.0, 1.0)
            else:
                location = mean
            locations.append(location)
        logits = self.classifier(self.state_dropout(h, training=training))
        return logits, ops.stack(locations, axis=1), log_pis, baselines

    def call(self, images, training=False, return_locations=False):
        images = ops.cast(images, "float32")
        if training:
            logits, locations, log_pis, baselines = self._unroll(images, sample=True, training=True)
            log_probs = ops.log_softmax(logits, axis=-1)
            if log_pis:
                self._rl_terms = (
                    ops.stack(log_pis, axis=1),
                    ops.stack(baselines, axis=1),
                    log_probs,
                )
            outputs = log_probs if self.classifier_activation is None else ops.exp(log_probs)
        else:
            self._rl_terms = None
            samples = max(self.mc_samples, 1)
            batch = ops.shape(images)[0]
            if samples > 1:
                # Sample-major copies: rows [k * batch, (k + 1) * batch) are sample k.
                images = ops.concatenate([images] * samples, axis=0)
            logits, locations, _, _ = self._unroll(images, sample=self.mc_samples > 0)
            probs = ops.softmax(logits, axis=-1)
            if samples > 1:
                probs = ops.mean(ops.reshape(probs, (samples, batch, self.num_classes)), axis=0)
                locations = locations[:batch]
            outputs = probs if self.classifier_activation == "softmax" else ops.log(probs)
        if return_locations:
            return outputs, locations
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            num_glimpses=self.num_glimpses,
            glimpse_size=self.glimpse_size,
            num_scales=self.num_scales,
            scale_factor=self.scale_factor,
            glimpse_units=self.glimpse_units,
            glimpse_network=self.glimpse_network,
            hidden_units=self.hidden_units,
            core=self.core,
            location_std=self.location_std,
            dropout=self.dropout,
            reward=self.reward,
            mc_samples=self.mc_samples,
            classifier_activation=self.classifier_activation,
            seed=self.seed,
        )
        return config


def predict_with_glimpses(model, images, batch_size=100, seed=0):
    """Class probabilities and glimpse locations, for drawing the scan path.

    Args:
        model: a `RecurrentAttentionModel`.
        images: `(N, height, width, channels)` numpy array.
        batch_size: images per forward pass.
        seed: sampler seed (the result is a function of it and `batch_size`).

    Returns:
        `(probabilities, locations)`: numpy arrays `(N, num_classes)` and
        `(N, num_glimpses, 2)`, locations `(y, x)` in [-1, 1] (pixel row
        `(y + 1) / 2 * height`, column `(x + 1) / 2 * width`).
    """
    model.reset_sampling(seed)
    probs, locs = [], []
    for start in range(0, len(images), batch_size):
        p, loc = model(images[start : start + batch_size], training=False, return_locations=True)
        p = ops.convert_to_numpy(p)
        if model.classifier_activation is None:
            p = np.exp(p)
        probs.append(p)
        locs.append(ops.convert_to_numpy(loc))
    return np.concatenate(probs), np.concatenate(locs)


def build_ram(input_shape=(60, 60, 1), num_classes=10, **kwargs):
    """A built `RecurrentAttentionModel` (weights created by one call on zeros)."""
    model = RecurrentAttentionModel(num_classes=num_classes, name="ram", **kwargs)
    model(np.zeros((1,) + tuple(input_shape), "float32"), training=False)
    return model


# The paper's architecture; the shipped weights of both tags add their `architecture` (the
# convolutional glimpse network), which `zoo.load("ram", weights=...)` builds.
RAM_CONFIG = dict(
    num_glimpses=8,
    glimpse_size=12,
    num_scales=3,
    scale_factor=2,
    glimpse_units=128,
    hidden_units=256,
    core="rnn",
    location_std=0.1,
)


def ram(input_shape, num_classes, **kwargs):
    return build_ram(input_shape, num_classes, **{**RAM_CONFIG, **kwargs})
