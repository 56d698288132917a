"""Class names and colours of the segmentation label sets the zoo's weights predict.

A `WeightsSpec` names its label set (`labels="cityscapes"`); `zoo.decode_segmentation` turns
per-pixel scores into the classes present with their names, and the command line's
`predict` colours its mask PNGs with the set's palette (PASCAL VOC's colour map for weights
without a label set, zoo/scenes.py).

Cityscapes: the 19 evaluation classes in train-id order (0 = road ... 18 = bicycle) and
their colours, as in the Cityscapes benchmark's `labels.py` (mcordts/cityscapesScripts) and
`torchvision.datasets.Cityscapes.classes` (the oracle test compares with torchvision).
"""

import numpy as np

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_COLOURS = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

# label set -> (class names by id, RGB colour by id)
LABEL_SETS = {"cityscapes": (CITYSCAPES_CLASSES, CITYSCAPES_COLOURS)}


def _label_set(labels):
    try:
        return LABEL_SETS[labels]
    except (KeyError, TypeError):
        raise ValueError(f"labels must be one of {sorted(LABEL_SETS)}, got {labels!r}") from None


def class_names(labels):
    """The class names of the label set `labels`, by class id."""
    return _label_set(labels)[0]


def palette(labels):
    """A uint8 `(num_classes, 3)` RGB colour per class id of the label set `labels`."""
    return np.asarray(_label_set(labels)[1], np.uint8)


def decode_segmentation(predictions, labels="cityscapes", top=None):
    """The classes each image's pixels are assigned to, like `decode_predictions` for
    classification: for each image, `(class id, name, share of pixels)` of the classes
    present, the largest share first (ties by class id), at most `top` of them.

    Args:
        predictions: per-pixel scores `(batch, height, width, num_classes)` (the argmax is
            taken) or class maps `(batch, height, width)` of integers.
        labels: the label set (`"cityscapes"`).
        top: how many classes per image (None: all present).

    Returns:
        A list (one per image) of lists of `(class_id, name, share)`, `share` in [0, 1].
    """
    names = class_names(labels)
    predictions = np.asarray(predictions)
    if predictions.ndim == 4:
        if predictions.shape[-1] != len(names):
            raise ValueError(
                f"predictions have {predictions.shape[-1]} classes; the {labels} label set "
                f"has {len(names)}"
            )
        class_maps = predictions.argmax(-1)
    elif predictions.ndim == 3 and np.issubdtype(predictions.dtype, np.integer):
        class_maps = predictions
        if class_maps.size and (class_maps.min() < 0 or class_maps.max() >= len(names)):
            raise ValueError(
                f"class ids must be in [0, {len(names)}) for the {labels} label set, got "
                f"[{class_maps.min()}, {class_maps.max()}]"
            )
    else:
        raise ValueError(
            f"predictions must be scores (batch, height, width, classes) or integer class "
            f"maps (batch, height, width), got shape {predictions.shape} ({predictions.dtype})"
        )
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive integer or None, got {top!r}")
    decoded = []
    for class_map in class_maps:
        ids, counts = np.unique(class_map, return_counts=True)
        order = sorted(zip(ids.tolist(), counts.tolist()), key=lambda pair: (-pair[1], pair[0]))
        decoded.append([(i, names[i], count / class_map.size) for i, count in order[:top]])
    return decoded
