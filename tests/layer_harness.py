"""The one test helper every layer of `keras_attention` passes (cf. Keras' `run_layer_test`).

A `LayerCase` says how to build a layer and what input it takes; `run_layer_checks` runs, on
the backend this process was started with (`KERAS_BACKEND`), the checks the project promises
for every layer:

- forward pass and gradients (w.r.t. every trainable weight and the input) are finite, and
  every trainable weight receives a non-zero gradient (weights randomised first, since many
  layers start as the identity);
- `get_config` / `from_config` and `.keras` save / load round trips give identical outputs;
- `mixed_bfloat16`: outputs in the documented dtype, finite, close to the float32 result
  with the same weights; gradients finite; `model.fit` under that policy updates every
  weight of the layer;
- dynamic height and width (`Input((None, None, C))`) where the math allows;
- `return_attention=True` gives `(outputs, attention)` with the documented map shape, eagerly
  and in functional models (symbolic tensors);
- invalid configurations and input ranks raise `ValueError` naming the argument.

A layer taking several tensors (`call([a, b])`) declares `input_shape` as a *list* of shapes;
every check then feeds a list (random arrays, `keras.Input`s) and takes gradients w.r.t.
each input.

Each check is its own function, so a failure names the case and the check. A family's test
module runs its cases with `test_layer_harness = harness_test(cases_<family>)`.

On JAX, the checks call layers through `call_layer`, which compiles the call (`jax.jit`
over a `keras.StatelessScope`, the way Keras' own JAX trainer runs a model) instead of
running it op by op: eager JAX compiles every primitive for every new shape, about 170
small compilations for one gradient of a squeeze-excite block against one for the jitted
function. TensorFlow and PyTorch keep calling the layer eagerly.

Three checks are skipped on JAX, where each compilation costs seconds, and run on
TensorFlow and PyTorch. Two exercise only Python and files, no backend code: the config
round trip and the `.keras` round trip (a config dict; weights written and read as numpy
arrays). The third, `model.fit` under `mixed_bfloat16`, adds on JAX only Keras' own
optimizer step to what `mixed_bfloat16` already compiles there: the layer's forward pass and
gradients under that policy, traced statelessly as Keras' JAX trainer traces it.
"""

import dataclasses
import re
from collections.abc import Callable

import keras
import numpy as np
import pytest
from keras import ops

BACKEND = keras.backend.backend()


@dataclasses.dataclass
class LayerCase:
    """How to build and feed one layer configuration."""

    id: str
    cls: type
    kwargs: dict
    # with batch dimension; a list of such tuples for a layer called on a list of tensors
    input_shape: tuple
    # True, or the reason the layer needs static spatial sizes (the check is then skipped
    # with that reason)
    dynamic_hw: object = True
    # attention map shape given the input shape (None: the layer has no map)
    attention_shape: Callable = None
    # (kwargs, input_shape, regex of the ValueError message) expected to fail at build
    invalid: tuple = ()
    # extra spatial sizes ((H, W) for 2D inputs, (L,) for 1D, (T, H, W) for 3D) for the
    # dynamic shape check; for several inputs, one size for all or a tuple of one per input
    other_sizes: tuple = ((5, 7), (11, 6))
    # the layer's `call(training=...)` argument
    training: bool = True
    # relative tolerance of mixed_bfloat16 outputs against float32 (norm-wise)
    bf16_rtol: float = 0.05
    # indices of inputs that get no gradient by design (integer crop corners, glimpse
    # locations snapped to pixels): their gradient must be absent or zero
    no_input_gradient: tuple = ()
    # final path components of weights with no gradient by construction (a bias under a
    # softmax, which is shift-invariant): their gradient must be zero up to rounding
    no_weight_gradient: tuple = ()

    def build_layer(self, **overrides):
        return self.cls(**{**self.kwargs, **overrides})


def is_multi_input(shape):
    """Whether a case's `input_shape` describes several inputs (a list of shapes)."""
    return isinstance(shape, list)


def as_list(value, shape):
    """The per-input values of a case as a list (one item for a single-input case)."""
    return list(value) if is_multi_input(shape) else [value]


def random_input(shape, seed=0):
    if is_multi_input(shape):
        return [random_input(s, seed + i) for i, s in enumerate(shape)]
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def symbolic_input(shape, batch_size=None):
    """`keras.Input`(s) for `shape` without its batch dimension (a list for several inputs)."""
    if is_multi_input(shape):
        return [symbolic_input(s, batch_size) for s in shape]
    return keras.Input(tuple(shape[1:]), batch_size=batch_size)


def randomize_weights(layer, seed=0):
    """Give every weight a random value: trainable and statistics alike.

    Scales and variances stay positive and near 1 so normalisations remain well conditioned;
    everything else is drawn around 0. This makes zero-initialised residual scalars and
    identity-initialised layers non-trivial, as oracle comparisons need.
    """
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        shape = tuple(weight.shape)
        name = weight.path.split("/")[-1]
        if name in ("moving_variance", "gamma") or name.endswith("variance"):
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.normal(0.0, 0.5, size=shape)
        weight.assign(value.astype(weight.dtype))


def build_and_randomize(case, seed=0, **overrides):
    layer = case.build_layer(**overrides)
    layer.build(case.input_shape)
    randomize_weights(layer, seed)
    return layer


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")))


def _variable_values(variables):
    return [v.value for v in variables]


def _jax_forward(layer, training, **kwargs):
    """`f(trainable values, non-trainable values, inputs) -> layer(inputs)`, stateless."""

    def forward(trainable, non_trainable, inputs):
        mapping = [
            *zip(layer.trainable_variables, trainable),
            *zip(layer.non_trainable_variables, non_trainable),
        ]
        with keras.StatelessScope(state_mapping=mapping):
            return layer(inputs, training=training, **kwargs)

    return forward


def call_layer(layer, x, training=False, **kwargs):
    """`layer(x, training=training, **kwargs)`: eager on TensorFlow and PyTorch, one compiled
    function on JAX (see the module docstring)."""
    if BACKEND != "jax":
        return layer(x, training=training, **kwargs)
    import jax

    forward = jax.jit(_jax_forward(layer, training, **kwargs))
    return forward(
        _variable_values(layer.trainable_variables),
        _variable_values(layer.non_trainable_variables),
        x,
    )


def loss_and_gradients(layer, x, training=True):
    """Return (output, d loss / d trainable weights, d loss / d input) on this backend.

    The loss is a fixed random projection of the output so no direction of the gradient is
    trivially zero (e.g. the sum of a softmax). For a list of inputs, the input gradient is
    the list of gradients w.r.t. each.
    """
    multi = isinstance(x, list)
    x = [np.asarray(a) for a in x] if multi else np.asarray(x)
    trainable = layer.trainable_variables

    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        forward = _jax_forward(layer, training)
        non_trainable = _variable_values(layer.non_trainable_variables)
        xin = [jnp.asarray(a) for a in x] if multi else jnp.asarray(x)
        output_shape = jax.eval_shape(
            forward, _variable_values(trainable), non_trainable, xin
        ).shape
        projection = np.random.default_rng(123).normal(size=output_shape).astype("float32")

        def loss_fn(trainable_values, inputs):
            y = forward(trainable_values, non_trainable, inputs)
            return jnp.sum(y.astype("float32") * projection), y

        gradients = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
        (_, y), (g_weights, g_input) = gradients(_variable_values(trainable), xin)
        g_input = [to_numpy(g) for g in g_input] if multi else to_numpy(g_input)
        return to_numpy(y), [to_numpy(g) for g in g_weights], g_input

    y0 = layer(x, training=training)
    projection = np.random.default_rng(123).normal(size=tuple(y0.shape)).astype("float32")

    if BACKEND == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(a) for a in (x if multi else [x])]
        with tf.GradientTape() as tape:
            for xt in xs:
                tape.watch(xt)
            y = layer(xs if multi else xs[0], training=training)
            loss = tf.reduce_sum(tf.cast(y, "float32") * projection)
        grads = tape.gradient(loss, [v.value for v in trainable] + xs)
        n = len(trainable)
        input_grads = [to_numpy(g) if g is not None else None for g in grads[n:]]
        return (
            to_numpy(y),
            [to_numpy(g) if g is not None else None for g in grads[:n]],
            input_grads if multi else input_grads[0],
        )

    if BACKEND == "torch":
        import torch

        xs = [torch.tensor(a, requires_grad=True) for a in (x if multi else [x])]
        for v in trainable:
            v.value.grad = None
        y = layer(xs if multi else xs[0], training=training)
        loss = (y.float() * torch.from_numpy(projection)).sum()
        loss.backward()
        grads = [to_numpy(v.value.grad) if v.value.grad is not None else None for v in trainable]
        input_grads = [to_numpy(xt.grad) if xt.grad is not None else None for xt in xs]
        return to_numpy(y.detach()), grads, input_grads if multi else input_grads[0]

    raise RuntimeError(f"Unsupported backend {BACKEND}")


# --------------------------------------------------------------------------------------
# The checks


def check_forward_and_gradients(case):
    layer = build_and_randomize(case)
    x = random_input(case.input_shape, seed=1)
    y, weight_grads, input_grad = loss_and_gradients(layer, x, training=case.training)
    assert np.all(np.isfinite(y)), "forward pass produced non-finite values"
    expected = tuple(layer.compute_output_shape(case.input_shape))
    assert y.shape == expected, f"output shape {y.shape} != compute_output_shape {expected}"
    for i, grad in enumerate(as_list(input_grad, case.input_shape)):
        if i in case.no_input_gradient:
            assert grad is None or not np.any(grad), f"input {i} should get no gradient"
            continue
        assert np.all(np.isfinite(grad)) and np.any(grad != 0), f"gradient w.r.t. input {i}"
    largest = max((float(np.max(np.abs(g))) for g in weight_grads if g is not None), default=0.0)
    for variable, grad in zip(layer.trainable_variables, weight_grads):
        assert grad is not None, f"no gradient reaches {variable.path}"
        assert np.all(np.isfinite(grad)), f"non-finite gradient for {variable.path}"
        if "/".join(variable.path.split("/")[-2:]) in case.no_weight_gradient:
            assert np.max(np.abs(grad)) <= 1e-5 * largest, f"gradient for {variable.path}"
            continue
        assert np.any(grad != 0), f"zero gradient for {variable.path}"


def check_config_round_trip(case):
    layer = build_and_randomize(case)
    config = layer.get_config()
    clone = case.cls.from_config(config)
    assert clone.get_config() == config
    clone.build(case.input_shape)
    clone.set_weights(layer.get_weights())
    x = random_input(case.input_shape, seed=2)
    np.testing.assert_array_equal(to_numpy(call_layer(clone, x)), to_numpy(call_layer(layer, x)))


def check_saving_round_trip(case, tmp_path):
    layer = case.build_layer()
    inputs = symbolic_input(case.input_shape)
    model = keras.Model(inputs, layer(inputs))
    randomize_weights(model)
    x = random_input(case.input_shape, seed=3)
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects: registration must work
    assert type(restored.layers[-1]) is case.cls
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)


def check_mixed_bfloat16(case):
    reference = build_and_randomize(case)
    layer = case.build_layer(dtype="mixed_bfloat16")
    layer.build(case.input_shape)
    layer.set_weights(reference.get_weights())
    assert all(w.dtype == "float32" for w in layer.weights), "variables must stay float32"
    x = random_input(case.input_shape, seed=4)
    y = call_layer(layer, x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16", (
        f"outputs should be in the compute dtype bfloat16, got {y.dtype}"
    )
    y = to_numpy(y)
    assert np.all(np.isfinite(y))
    y32 = to_numpy(call_layer(reference, x))
    error = np.linalg.norm(y - y32) / max(np.linalg.norm(y32), 1e-6)
    assert error < case.bf16_rtol, f"bf16 result differs from float32 by {error:.3g} (norm-wise)"
    _, grads, input_grad = loss_and_gradients(layer, x, training=case.training)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert all(g is None or np.all(np.isfinite(g)) for g in as_list(input_grad, case.input_shape))


def check_fit_mixed_bfloat16(case):
    """`model.fit` with the layer under `mixed_bfloat16` (the way users train) takes steps."""
    inputs = symbolic_input(case.input_shape)
    layer = case.build_layer(dtype="mixed_bfloat16")
    features = layer(inputs)
    pooling = {
        2: keras.layers.Identity,  # (batch, features) outputs: nothing to pool
        3: keras.layers.GlobalAveragePooling1D,
        4: keras.layers.GlobalAveragePooling2D,
        5: keras.layers.GlobalAveragePooling3D,
    }[len(features.shape)]
    pooled = pooling(dtype="mixed_bfloat16")(features)
    logits = keras.layers.Dense(3, dtype="float32")(pooled)  # float32 logits and loss
    model = keras.Model(inputs, logits)
    randomize_weights(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = random_input([(8, *s[1:]) for s in as_list(case.input_shape, case.input_shape)], seed=6)
    x = x if is_multi_input(case.input_shape) else x[0]
    y = np.arange(8) % 3
    before = [to_numpy(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = [to_numpy(w) for w in model.trainable_weights]
    n = len(layer.trainable_weights)
    changed = [not np.array_equal(a, b) for a, b in zip(before[:n], after[:n])]
    # Cases checked with training=False have weights whose training-mode gradient is exactly
    # zero by construction (a bias right before a BatchNorm): there, some must move.
    if case.training:
        assert all(changed), "some weights of the layer were not updated by fit"
    else:
        assert any(changed), "no weight of the layer was updated by fit"
    assert all(np.all(np.isfinite(w)) for w in after)


def check_dynamic_spatial_size(case):
    if case.dynamic_hw is not True:
        pytest.skip(f"static spatial size by design: {case.dynamic_hw}")
    shapes = as_list(case.input_shape, case.input_shape)
    layer = case.build_layer()
    inputs = [keras.Input((None,) * (len(s) - 2) + (s[-1],)) for s in shapes]
    inputs = inputs if is_multi_input(case.input_shape) else inputs[0]
    model = keras.Model(inputs, layer(inputs))
    randomize_weights(model)
    for sizes in case.other_sizes:
        per_input = sizes if isinstance(sizes[0], tuple) else (sizes,) * len(shapes)
        shape = [(2, *size, s[-1]) for size, s in zip(per_input, shapes)]
        shape = shape if is_multi_input(case.input_shape) else shape[0]
        # (sizes may mix 2D sizes with () for (batch, n) vector inputs)
        seed = int(np.prod([n for size in sizes for n in np.ravel(size)]))
        x = random_input(shape, seed=seed)
        y = model.predict(x, verbose=0)
        assert y.shape == tuple(layer.compute_output_shape(shape))
        # compiled (predict) against eager: float32 round-off grows with the output's scale
        # (randomised weights give values up to ~6; a JAX run differed by 1.7e-5 there)
        atol = 1e-5 * max(1.0, float(np.abs(y).max()))
        np.testing.assert_allclose(y, to_numpy(call_layer(layer, x)), rtol=1e-5, atol=atol)


def check_return_attention(case):
    if case.attention_shape is None:
        pytest.skip("the layer has no attention map")
    layer = build_and_randomize(case)
    x = random_input(case.input_shape, seed=5)
    outputs, attention = call_layer(layer, x, return_attention=True)
    np.testing.assert_allclose(
        to_numpy(outputs), to_numpy(call_layer(layer, x)), rtol=1e-6, atol=1e-6
    )
    expected = tuple(case.attention_shape(case.input_shape))
    assert tuple(attention.shape) == expected
    assert tuple(layer.compute_attention_shape(case.input_shape)) == expected
    assert np.all(np.isfinite(to_numpy(attention)))
    # Symbolically too: a functional model can output the map next to the features.
    batch_size = as_list(case.input_shape, case.input_shape)[0][0]
    inputs = symbolic_input(case.input_shape, batch_size=batch_size)
    symbolic_outputs, symbolic_attention = case.build_layer()(inputs, return_attention=True)
    assert tuple(symbolic_attention.shape) == expected
    assert tuple(symbolic_outputs.shape) == tuple(layer.compute_output_shape(case.input_shape))


def check_invalid_arguments(case):
    for kwargs, input_shape, pattern in case.invalid:
        try:
            layer = case.build_layer(**kwargs)
            layer.build(input_shape)
        except ValueError as error:
            assert re.search(pattern, str(error)), (
                f"{kwargs} / {input_shape}: message {str(error)!r} does not match {pattern!r}"
            )
        else:
            raise AssertionError(
                f"{kwargs} with input_shape={input_shape} did not raise ValueError"
            )


CHECKS = {
    "forward_and_gradients": check_forward_and_gradients,
    "config_round_trip": check_config_round_trip,
    "saving_round_trip": check_saving_round_trip,
    "mixed_bfloat16": check_mixed_bfloat16,
    "fit_mixed_bfloat16": check_fit_mixed_bfloat16,
    "dynamic_spatial_size": check_dynamic_spatial_size,
    "return_attention": check_return_attention,
    "invalid_arguments": check_invalid_arguments,
}


# Not repeated on JAX (see the module docstring), with the reason the skip gives.
SKIPPED_ON_JAX = {
    "config_round_trip": "no backend code: runs on TensorFlow and PyTorch",
    "saving_round_trip": "no backend code: runs on TensorFlow and PyTorch",
    "fit_mixed_bfloat16": "the mixed_bfloat16 check compiles the layer's forward pass and "
    "gradients on JAX; model.fit runs on TensorFlow and PyTorch",
}


def run_check(name, case, tmp_path):
    if BACKEND == "jax" and name in SKIPPED_ON_JAX:
        pytest.skip(SKIPPED_ON_JAX[name])
    check = CHECKS[name]
    if name == "saving_round_trip":
        check(case, tmp_path)
    else:
        check(case)


def harness_test(cases_module):
    """A test function running every check on every case of `cases_module.CASES`.

    Assign it to a `test_*` name of the family's test module, so pytest collects it there:
    `test_layer_harness = harness_test(cases_channel)`. The function records the module it
    runs (`runs_cases_of`), which `tests/keras_attention/test_case_coverage.py` checks.
    """

    @pytest.mark.parametrize("check", sorted(CHECKS))
    @pytest.mark.parametrize("case", cases_module.CASES, ids=lambda case: case.id)
    def test_layer_harness(case, check, tmp_path):
        run_check(check, case, tmp_path)

    test_layer_harness.runs_cases_of = cases_module.__name__
    return test_layer_harness
