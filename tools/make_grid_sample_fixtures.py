"""Regenerate tests/fixtures/grid_sample/*.npz from live torch.

How: with the oracle extra installed (`pip install -e .[oracle]`), run
`python tools/make_grid_sample_fixtures.py [case ids]` from the repository root. Each case of
tests/keras_attention/grid_sample_reference.py runs torch `F.affine_grid` + `F.grid_sample` on
seed-0 inputs and stores inputs, output and the gradients w.r.t. image and theta, so the
default test run checks `AffineGrid` + `BilinearSampler` parity without torch.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402,F401  (before anything that may import TensorFlow)

from tests.keras_attention.grid_sample_reference import CASES, save_fixture, torch_run  # noqa: E402


def main(selected=None):
    for case in CASES:
        if selected and case.id not in selected:
            continue
        save_fixture(case, torch_run(case, seed=0))
        print("wrote", case.id)


if __name__ == "__main__":
    main(sys.argv[1:])
