"""Regenerate tests/fixtures/oracles/*.npz from live timm.

How: install the oracle extra (`pip install -e .[oracle]`, i.e. torch 2.14.1, torchvision
0.29.1, timm 1.0.29), then run `python tools/make_oracle_fixtures.py [case ids]` from the
repository root. Each case of tests/keras_attention/oracles_*.py is built in timm with seed 0,
every parameter and BN statistic randomised, run on a random input, and the input, output and
state dict are stored, so the default test run checks parity without torch.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import timm  # noqa: E402,F401  (before anything that may import TensorFlow)

from tests.keras_attention import all_oracle_cases  # noqa: E402
from tests.oracle_cases import save_fixture, timm_run  # noqa: E402


def main(selected=None):
    for case in all_oracle_cases():
        if selected and case.id not in selected:
            continue
        save_fixture(case, timm_run(case, seed=0))
        print("wrote", case.id)


if __name__ == "__main__":
    main(sys.argv[1:])
