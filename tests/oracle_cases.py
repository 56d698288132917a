"""Parity cases against timm: one definition used three ways.

- `tools/make_oracle_fixtures.py` runs timm once and stores input, output and state dict
  in `tests/fixtures/oracles/<id>.npz` (so the default test run needs no torch);
- the default tests load those fixtures and compare our layer's output;
- tests marked `oracle` run timm live in the process and compare the same way.

A family's test module runs both through `timm_parity_tests(oracles_<family>)`.

Every parameter and BN statistic of the timm module is randomised before the comparison,
because freshly initialised attention modules are (close to) identities.
"""

import dataclasses
import pathlib
from collections.abc import Callable

import numpy as np

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "oracles"
RTOL = 1e-5


@dataclasses.dataclass
class OracleCase:
    id: str
    timm_module: Callable  # () -> torch.nn.Module (imports timm itself)
    keras_layer: Callable  # () -> unbuilt keras layer with the matching configuration
    input_shape: tuple  # NHWC
    # Optional: rewrite the timm state dict before loading, e.g. to express the official
    # code's [max, mean] pooling order through timm's [mean, max] module.
    adapt_state: Callable = None


def timm_run(case, seed=0):
    """Build the timm module with random parameters, run it; returns input, output, state."""
    import torch

    torch.manual_seed(seed)
    module = case.timm_module()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    module.eval()
    n, h, w, c = case.input_shape
    x = torch.randn((n, c, h, w), generator=generator)
    with torch.no_grad():
        y = module(x)
    state = {
        k: v.detach().numpy().copy()
        for k, v in module.state_dict().items()
        if v.is_floating_point()
    }
    return {
        "input": x.permute(0, 2, 3, 1).numpy().copy(),
        "output": y.permute(0, 2, 3, 1).numpy().copy(),
        "state": state,
    }


def save_fixture(case, data):
    FIXTURES.mkdir(parents=True, exist_ok=True)
    arrays = {"input": data["input"], "output": data["output"]}
    arrays.update({"state." + k: v for k, v in data["state"].items()})
    np.savez_compressed(FIXTURES / f"{case.id}.npz", **arrays)


def load_fixture(case):
    with np.load(FIXTURES / f"{case.id}.npz") as npz:
        return {
            "input": npz["input"],
            "output": npz["output"],
            "state": {k[len("state.") :]: npz[k] for k in npz.files if k.startswith("state.")},
        }


def assert_matches(case, data):
    """Load the timm weights into our layer and compare outputs at RTOL (norm-relative atol)."""
    import keras

    from zoo.convert.timm import load_timm_module

    layer = case.keras_layer()
    layer.build(case.input_shape)
    state = data["state"]
    if case.adapt_state is not None:
        state = case.adapt_state(dict(state))
    load_timm_module(layer, state)
    ours = np.asarray(keras.ops.convert_to_numpy(layer(data["input"], training=False)))
    reference = data["output"]
    scale = np.max(np.abs(reference))
    np.testing.assert_allclose(ours, reference, rtol=RTOL, atol=RTOL * scale)


def timm_parity_tests(oracles_module):
    """The two test functions of the cases `oracles_module.ORACLE_CASES`: against the committed
    fixtures, and against live timm (marked `oracle`).

    Assign them to `test_*` names of the family's test module, so pytest collects them there:
    `test_matches_committed_timm_fixture, test_matches_live_timm = timm_parity_tests(oracles_se)`
    (one line in the module). Each records the module it runs (`runs_cases_of`), which
    `tests/keras_attention/test_case_coverage.py` checks.
    """
    import pytest

    cases = oracles_module.ORACLE_CASES
    ids = [case.id for case in cases]

    @pytest.mark.parametrize("case", cases, ids=ids)
    def test_matches_committed_timm_fixture(case):
        assert_matches(case, load_fixture(case))

    @pytest.mark.oracle
    @pytest.mark.parametrize("case", cases, ids=ids)
    def test_matches_live_timm(case):
        pytest.importorskip("timm", reason="live oracle needs the `oracle` extra (timm, torch)")
        assert_matches(case, timm_run(case, seed=1))

    for test in (test_matches_committed_timm_fixture, test_matches_live_timm):
        test.runs_cases_of = oracles_module.__name__
    return test_matches_committed_timm_fixture, test_matches_live_timm
