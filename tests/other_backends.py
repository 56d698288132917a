"""Parameters for tests that rerun a TensorFlow result on the other Keras backends.

JAX is in the `test` extra, so its case runs with the `slow` cases. PyTorch comes only with
the `oracle` extra, so its case carries the `oracle` marker and runs where that extra is
installed (`make test-oracle`).
"""

import pytest

OTHER_BACKENDS = [
    pytest.param("jax", marks=pytest.mark.slow),
    pytest.param("torch", marks=pytest.mark.oracle),
]
