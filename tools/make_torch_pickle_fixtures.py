"""Regenerate tests/fixtures/zoo/torch_state_{zip,legacy}.pth with live torch.

How: install the oracle extra (torch 2.14.1), then run
`python tools/make_torch_pickle_fixtures.py` from the repository root. Both files hold
`fixture_state(torch)` saved with `torch.save`, once in the zip format and once in the legacy
format (`_use_new_zipfile_serialization=False`); tests/zoo/test_torch_pickle.py reads them
without torch and compares with `fixture_state(numpy)`.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "zoo"
FORMATS = {"zip": True, "legacy": False}


def fixture_state(xp):
    """The fixture's tensors, from closed forms, with `xp` = torch or numpy: several dtypes,
    a 4-D kernel, a transposed (non-contiguous) view, a slice at an offset into a shared
    storage, a scalar and an empty tensor."""
    is_torch = xp.__name__ == "torch"
    base = xp.arange(24, dtype=xp.float32) / 8 - 1
    shared = xp.arange(10, dtype=xp.float64) * 0.5
    matrix = xp.arange(12, dtype=xp.float32).reshape(3, 4)
    state = {
        "conv.weight": base.reshape(2, 3, 2, 2),
        "fc.weight_t": matrix.t() if is_torch else matrix.T,
        "fc.bias": shared[3:7],
        "fc.bias_head": shared[:2],
        "bn.num_batches_tracked": xp.asarray(7, dtype=xp.int64)
        if not is_torch
        else xp.tensor(7, dtype=xp.int64),
        "half": (xp.arange(5, dtype=xp.float32) / 4).to(xp.float16)
        if is_torch
        else (xp.arange(5, dtype=xp.float32) / 4).astype(xp.float16),
        "mask": xp.arange(4) % 2 == 0,
        "empty": xp.zeros((0, 3), dtype=xp.float32),
    }
    return state


def main():
    import collections

    import torch

    state = collections.OrderedDict(fixture_state(torch))
    for name, zip_format in FORMATS.items():
        path = FIXTURES / f"torch_state_{name}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=zip_format)
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
