"""For tests that rerun a TensorFlow result on the other Keras backends: their parameters,
and a pytest run in a process of another backend.

JAX is in the `test` extra, so its case runs with the `slow` cases. PyTorch comes only with
the `oracle` extra, so its case carries the `oracle` marker and runs where that extra is
installed (`make test-oracle`).
"""

import pytest

OTHER_BACKENDS = [
    pytest.param("jax", marks=pytest.mark.slow),
    pytest.param("torch", marks=pytest.mark.oracle),
]


def run_pytest_on_backend(backend, args, cwd, **env):
    """Run pytest with `args` in a process whose Keras backend is `backend` (this process's
    backend is fixed at import); return the finished `subprocess.CompletedProcess`."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        env=dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(root), **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
