"""ImageNet-1k class names (from timm's class lists; see tools/make_imagenet_classes.py)."""

import functools
import json
import pathlib

import numpy as np

CLASSES_FILE = pathlib.Path(__file__).resolve().parent / "data" / "imagenet_classes.json"


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """[(synset, lemmas), ...] in class-index order (1,000 entries)."""
    return [tuple(entry) for entry in json.loads(CLASSES_FILE.read_text())]


def decode_predictions(predictions, top=5):
    """Like `keras.applications.*.decode_predictions`: for each row of a (batch, 1000)
    array of scores, the `top` classes as (synset, name, score), best first; the name is the
    first WordNet lemma."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape[1] != 1000:
        raise ValueError(
            f"decode_predictions expects a (batch, 1000) array of ImageNet scores, got shape "
            f"{predictions.shape}"
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ValueError(f"top must be an integer in [1, 1000], got {top!r}")
    classes = imagenet_classes()
    decoded = []
    for row in predictions:
        best = np.argsort(-row, kind="stable")[:top]
        decoded.append(
            [(classes[i][0], classes[i][1].split(",")[0].strip(), float(row[i])) for i in best]
        )
    return decoded
