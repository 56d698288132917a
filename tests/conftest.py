import os

# torchvision / timm must be imported before TensorFlow in one process, or the process dies
# with a segmentation fault (see ARCHITECTURE.md). Import them first whenever they are
# installed, so oracle tests can share the process with TF-backed Keras.
try:  # pragma: no cover - depends on the `oracle` extra
    import timm  # noqa: F401
    import torch  # noqa: F401
except ImportError:
    pass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib.util  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

# What the `oracle` extra installs (setup.cfg). `make test` runs without it, so its oracle
# cases skip there; `make test-oracle` installs it and runs them.
ORACLE_MODULES = ("torch", "timm", "pytorchcv")


def pytest_runtest_setup(item):
    if item.get_closest_marker("oracle") is None:
        return
    missing = [name for name in ORACLE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"live oracle needs the `oracle` extra (missing: {', '.join(missing)})")


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
