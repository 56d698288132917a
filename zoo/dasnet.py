"""dasNet (Stollenga et al., NIPS 2014): a trained CNN re-run several times on the same image,
its filters re-weighted between passes by a feedback policy trained with separable natural
evolution strategies (SNES).

`dasnet_mnist_cnn` wraps the zoo's MNIST classifier CNN (`zoo.stn_cnn.classifier_cnn_layers`,
the baseline of the ST-CNN, here on plain 28x28 digits). The model is two nested parts:

- `trunk`: the CNN up to and including the first gated convolution (its ReLU output). Nothing
  before a gate changes between passes, so it runs once;
- `feedback`: `passes` passes over the rest. Pass 1 is the plain CNN (gates 1). After each
  pass the observation is the spatial mean of every gated layer's (gated) feature map,
  concatenated; each gated layer's `keras_attention.layers.FeedbackChannelGate` (one policy per
  layer, shared by all passes) turns it into the multipliers of that layer's filters for the
  next pass. The logits of the last pass are the output.

The policy starts as the identity, so a fresh dasNet predicts exactly as its CNN.
`copy_cnn_weights` puts a trained CNN in; `train_policy` then evolves the policy's parameters
alone with `snes_maximize`, the fitness being the mean log-likelihood of the true class after
the last pass on a minibatch drawn afresh every generation (the paper's Algorithm 1 without its
boosting of misclassified images and weight penalty).
"""

import math

import keras
import numpy as np
from keras import layers

from keras_attention.layers import FeedbackChannelGate
from zoo.stn_cnn import classifier_cnn_layers

# the classifier CNN's stages up to its last convolution, in order
_STAGES = ("conv1", "pool1", "conv2", "pool2", "conv3")
GATEABLE_LAYERS = ("conv1", "conv2", "conv3")
DEFAULT_GATED_LAYERS = ("conv3",)
DEFAULT_PASSES = 3
CNN_LAYERS = ("conv1", "conv2", "conv3", "fc1", "fc2")


def _check_gated_layers(gated_layers):
    if (
        not isinstance(gated_layers, (list, tuple))
        or not gated_layers
        or any(name not in GATEABLE_LAYERS for name in gated_layers)
        or len(set(gated_layers)) != len(gated_layers)
    ):
        raise ValueError(
            f"gated_layers must be a non-empty tuple of distinct names from {GATEABLE_LAYERS}, "
            f"got gated_layers={gated_layers!r}"
        )
    return tuple(sorted(gated_layers, key=GATEABLE_LAYERS.index))


def build_dasnet_cnn(
    input_shape=(28, 28, 1),
    num_classes=10,
    passes=DEFAULT_PASSES,
    gated_layers=DEFAULT_GATED_LAYERS,
    max_gate=2.0,
    classifier_activation="softmax",
):
    """dasNet around the zoo's MNIST classifier CNN (see the module docstring).

    Args:
        input_shape: `(height, width, channels)`; any height and width.
        num_classes: classifier width.
        passes: number of passes `T` (>= 1; 1 is the plain CNN).
        gated_layers: the convolutions whose filters are gated (`"conv1"` to `"conv3"`).
        max_gate: upper bound of the multipliers (`FeedbackChannelGate`).
        classifier_activation: `"softmax"` or `None` (logits).
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be a positive integer, got passes={passes!r}")
    gated = _check_gated_layers(gated_layers)
    stack = classifier_cnn_layers(num_classes)
    first = _STAGES.index(gated[0])

    images = keras.Input(input_shape, name="image")
    x = images
    for name in _STAGES[: first + 1]:
        x = stack[name](x)
    trunk = keras.Model(images, x, name="trunk")

    widths = {"conv1": 32, "conv2": 64, "conv3": 64}
    observation_size = sum(widths[name] for name in gated)
    gates, observe = {}, {}
    for name in gated:
        gates[name] = FeedbackChannelGate(max_gate=max_gate, name=f"{name}_gate")
        gates[name].build([(None, None, None, widths[name]), (None, observation_size)])
        observe[name] = layers.GlobalAveragePooling2D(name=f"{name}_observation")
    concatenate = layers.Concatenate(name="observation")

    features = keras.Input(tuple(x.shape[1:]), name="trunk_features")
    observation = None
    for t in range(passes):
        h, seen = features, []
        for name in _STAGES[first:]:
            if name != _STAGES[first]:
                h = stack[name](h)
            if name in gated:
                if observation is not None:
                    h = gates[name]([h, observation])
                if t < passes - 1:
                    seen.append(observe[name](h))
        if seen:
            observation = concatenate(seen) if len(seen) > 1 else seen[0]
    for name in ("global_pool", "fc1", "fc2"):
        h = stack[name](h)
    feedback = keras.Model(features, h, name="feedback")

    outputs = feedback(trunk(images))
    if classifier_activation is not None:
        outputs = layers.Activation(classifier_activation, name="predictions", dtype="float32")(
            outputs
        )
    return keras.Model(images, outputs, name="dasnet_mnist_cnn")


def dasnet_mnist_cnn(input_shape, num_classes, **kwargs):
    return build_dasnet_cnn(input_shape, num_classes, **kwargs)


def _layer(model, name):
    for part in ("trunk", "feedback"):
        try:
            return model.get_layer(part).get_layer(name)
        except ValueError:
            continue
    raise ValueError(f"{model.name} has no layer {name!r}")


def copy_cnn_weights(cnn, model):
    """Copy a trained classifier CNN's weights (`zoo.stn_cnn.build_mnist_cnn`) into a dasNet
    built with the same number of classes; the policy is left as it is."""
    for name in CNN_LAYERS:
        _layer(model, name).set_weights(cnn.get_layer(name).get_weights())


def policy_gates(model):
    """The model's `FeedbackChannelGate` layers, shallowest first."""
    return [
        layer
        for layer in model.get_layer("feedback").layers
        if isinstance(layer, FeedbackChannelGate)
    ]


def get_policy(model):
    """The policy's parameters (every gate's kernel and bias) as one float64 vector."""
    return np.concatenate(
        [np.ravel(keras.ops.convert_to_numpy(w)) for g in policy_gates(model) for w in g.weights]
    ).astype(np.float64)


def set_policy(model, vector):
    """Set the policy's parameters from a vector laid out as `get_policy` returns it."""
    vector = np.asarray(vector)
    weights = [weight for gate in policy_gates(model) for weight in gate.weights]
    total = sum(math.prod(weight.shape) for weight in weights)
    if vector.shape != (total,):
        raise ValueError(f"the policy has {total} parameters, got a vector of shape {vector.shape}")
    offset = 0
    for weight in weights:
        size = math.prod(weight.shape)
        weight.assign(vector[offset : offset + size].reshape(weight.shape).astype("float32"))
        offset += size


def reset_policy(model):
    """Back to the identity gates (zero kernels, neutral biases): the plain CNN."""
    for gate in policy_gates(model):
        gate.policy.kernel.assign(np.zeros(gate.policy.kernel.shape, "float32"))
        gate.policy.bias.assign(np.full(gate.policy.bias.shape, gate.neutral_bias, "float32"))


# --------------------------------------------------------------------------------------
# Separable natural evolution strategies (Wierstra et al. 2008 / 2014; Schaul et al. 2011)


def snes_population_size(dimension):
    """The default population: 4 + floor(3 ln d)."""
    return 4 + int(3 * math.log(dimension))


def snes_utilities(population):
    """Rank-based fitness shaping, best first: max(0, ln(n/2 + 1) - ln k), normalised to sum
    1, minus 1/n (so the utilities sum to zero)."""
    ranks = np.arange(1, population + 1)
    raw = np.maximum(0.0, math.log(population / 2 + 1) - np.log(ranks))
    return raw / raw.sum() - 1.0 / population


def snes_maximize(
    fitness,
    mean,
    sigma=0.1,
    generations=100,
    population=None,
    learning_rate_mean=1.0,
    learning_rate_sigma=None,
    seed=0,
    callback=None,
):
    """Maximise `fitness` with separable natural evolution strategies.

    The search distribution is a Gaussian with a mean and a standard deviation per
    parameter. Each generation draws `population` standard normal vectors `s_k`, evaluates
    `fitness` at `mean + sigma * s_k`, gives the candidates rank-based utilities `u_k`
    (`snes_utilities`) and follows the natural gradient:
    `mean += lr_mean * sigma * sum_k u_k s_k`,
    `sigma *= exp(lr_sigma / 2 * sum_k u_k (s_k^2 - 1))`.

    Args:
        fitness: `f(candidates) -> fitnesses`: a `(population, d)` array to a `(population,)`
            array (higher is better). It may change between calls (a new minibatch).
        mean: the initial mean, a `(d,)` vector.
        sigma: the initial standard deviation (a scalar or a `(d,)` vector).
        generations: number of updates.
        population: candidates per generation (default `snes_population_size(d)`).
        learning_rate_mean: step size of the mean (1).
        learning_rate_sigma: step size of the log standard deviations (default
            `(3 + ln d) / (5 sqrt(d))`).
        seed: seed of the sampler (numpy's PCG64).
        callback: called as `callback(generation, mean, sigma, fitnesses)` after each
            generation.

    Returns:
        `(mean, sigma, history)`: the final distribution and, per generation, the mean
        fitness of its candidates.
    """
    mean = np.array(mean, dtype=np.float64)
    if mean.ndim != 1 or mean.size == 0:
        raise ValueError(f"mean must be a non-empty vector, got shape {mean.shape}")
    dimension = mean.size
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (dimension,)).copy()
    if not np.all(sigma > 0):
        raise ValueError("sigma must be positive")
    population = population or snes_population_size(dimension)
    if population < 2:
        raise ValueError(f"population must be at least 2, got {population}")
    if learning_rate_sigma is None:
        learning_rate_sigma = (3 + math.log(dimension)) / (5 * math.sqrt(dimension))
    utilities = snes_utilities(population)
    rng = np.random.default_rng(seed)
    history = []
    for generation in range(generations):
        samples = rng.standard_normal((population, dimension))
        scores = np.asarray(fitness(mean + sigma * samples), np.float64)
        if scores.shape != (population,):
            raise ValueError(f"fitness returned shape {scores.shape}, expected ({population},)")
        order = np.argsort(-scores, kind="stable")
        ranked = samples[order]
        mean = mean + learning_rate_mean * sigma * (utilities @ ranked)
        sigma = sigma * np.exp(learning_rate_sigma / 2 * (utilities @ (ranked**2 - 1)))
        history.append(float(scores.mean()))
        if callback is not None:
            callback(generation, mean, sigma, scores)
    return mean, sigma, history


# --------------------------------------------------------------------------------------
# dasNet's fitness and policy training


def trunk_features(model, images, batch_size=500):
    """The trunk's output (computed once: the passes only re-run what follows it)."""
    return model.get_layer("trunk").predict(images, batch_size=batch_size, verbose=0)


def log_likelihood(logits, labels):
    """Mean log-probability of the true classes under `softmax(logits)` (float64)."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(log_probs[np.arange(len(labels)), labels].mean())


def first_observations(model, features):
    """The observations after pass 1 (the plain CNN) from `trunk_features`, `(N, D)`."""
    feedback = model.get_layer("feedback")
    gated = [gate.name.removesuffix("_gate") for gate in policy_gates(model)]
    first = _STAGES.index(gated[0])
    h, seen = features, []
    for name in _STAGES[first:]:
        if name != _STAGES[first]:
            h = feedback.get_layer(name)(h)
        if name in gated:
            seen.append(keras.ops.convert_to_numpy(keras.ops.mean(h, axis=(1, 2))))
    return np.concatenate(seen, axis=1)


def policy_sigma(model, features, sigma):
    """Per-parameter search widths giving every gate's policy logit a perturbation of about
    `sigma` whatever the scale of the observations: `sigma` for the biases,
    `sigma / rms(||o||)` for the kernels (`o`: the observations after pass 1)."""
    observations = first_observations(model, features).astype(np.float64)
    norm = math.sqrt(float(np.mean(np.sum(observations**2, axis=1)))) or 1.0
    widths = []
    for gate in policy_gates(model):
        widths.append(np.full(math.prod(gate.policy.kernel.shape), sigma / norm))
        widths.append(np.full(math.prod(gate.policy.bias.shape), sigma))
    return np.concatenate(widths)


def policy_fitness(model, features, labels, vector):
    """The mean log-likelihood of `labels` after the last pass with the policy `vector`, from
    precomputed `trunk_features`. Leaves the model's policy set to `vector`."""
    set_policy(model, vector)
    logits = model.get_layer("feedback").predict_on_batch(features)
    return log_likelihood(keras.ops.convert_to_numpy(logits), labels)


def train_policy(
    model,
    images,
    labels,
    generations=100,
    batch_size=256,
    sigma=0.05,
    population=None,
    seed=0,
    static=False,
    callback=None,
):
    """Evolve the dasNet policy of `model` (the CNN stays fixed) with `snes_maximize`, from its
    current policy; each generation scores all candidates on one minibatch of `batch_size`
    images drawn afresh (generator seeded with `seed`). The initial search widths perturb
    each policy logit by about `sigma` (`policy_sigma`). Sets the final mean as the policy.

    Returns:
        `(sigma, history)` from `snes_maximize`.
    """
    features = trunk_features(model, images)
    labels = np.asarray(labels)
    batches = np.random.default_rng([seed, 1])
    full = get_policy(model)
    widths = policy_sigma(model, features, sigma)
    evolved = np.ones(full.size, bool)
    if static:
        full[_kernel_mask(model)] = 0.0
        evolved = ~_kernel_mask(model)

    def expand(candidate):
        vector = full.copy()
        vector[evolved] = candidate
        return vector

    def fitness(candidates):
        batch = batches.choice(len(labels), size=min(batch_size, len(labels)), replace=False)
        return [
            policy_fitness(model, features[batch], labels[batch], expand(c)) for c in candidates
        ]

    mean, sigma, history = snes_maximize(
        fitness,
        full[evolved],
        sigma=widths[evolved],
        generations=generations,
        population=population,
        seed=seed,
        callback=callback,
    )
    set_policy(model, expand(mean))
    return sigma, history


def _kernel_mask(model):
    """Which entries of the `get_policy` vector are kernel weights."""
    return np.concatenate(
        [
            np.full(math.prod(w.shape), w.path == gate.policy.kernel.path)
            for gate in policy_gates(model)
            for w in gate.weights
        ]
    )
