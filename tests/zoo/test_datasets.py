import numpy as np
import pytest

from zoo import datasets


def test_mnist_subset_split_is_fixed_disjoint_and_complete():
    x_train, y_train = datasets.mnist_subset("train")
    x_test, y_test = datasets.mnist_subset("test")
    x_all, y_all = datasets.mnist_subset("all", normalize=False)
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() == 1.0
    assert x_all.dtype == np.uint8 and x_all.shape == (5000, 28, 28, 1)
    # Same digits, nothing shared between train and test.
    rows = {bytes(img) for img in x_all.reshape(5000, -1)}
    train_rows = {bytes((img * 255).round().astype(np.uint8)) for img in x_train.reshape(4000, -1)}
    test_rows = {bytes((img * 255).round().astype(np.uint8)) for img in x_test.reshape(1000, -1)}
    assert train_rows | test_rows <= rows
    assert not train_rows & test_rows
    # Every class in both halves; the split is the documented seed-0 permutation.
    assert set(y_train) == set(y_test) == set(range(10))
    order = np.random.default_rng(0).permutation(5000)
    np.testing.assert_array_equal(y_test, y_all[order[:1000]])
    np.testing.assert_array_equal(datasets.mnist_subset("test")[1], y_test)


def test_mnist_subset_rejects_unknown_split():
    with pytest.raises(ValueError, match="split='validation'"):
        datasets.mnist_subset("validation")


def test_mnist_subset_detects_a_corrupt_file(tmp_path, monkeypatch):
    broken = tmp_path / "mnist_5k.npz"
    broken.write_bytes(datasets.MNIST_FILE.read_bytes()[:-10])
    monkeypatch.setattr(datasets, "MNIST_FILE", broken)
    with pytest.raises(OSError, match="corrupt"):
        datasets.mnist_subset()
