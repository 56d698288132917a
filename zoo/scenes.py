"""Digit scenes: a small semantic-segmentation task built from the shipped MNIST subset.

Each scene is a colour image holding a few MNIST digits, each scaled, slightly rotated and
painted in one colour over a textured background (smooth colour noise plus a sinusoidal
grating). Its label map gives every pixel a class:

- `0`: background;
- `1 + d`: a stroke of digit `d` (`d` in 0..9), so `NUM_CLASSES = 11`.

A pixel is a stroke of a digit where that digit's resampled ink (MNIST intensity in [0, 1])
is at least `INK_THRESHOLD` and no digit painted later covers it the same way; digits are
painted in order, each one alpha-blended over the scene with its ink as the alpha.

Like `zoo.tasks`, scenes are a pure function of `(split, seed, options)` (numpy's PCG64,
no TF randomness) and draw their digits from `zoo.datasets.mnist_subset(split)` alone, so
the test split's scenes hold only test digits, never a training digit.
"""

import numpy as np

from zoo import datasets
from zoo.tasks import DIGIT_SIZE, _rotate_scale

NUM_CLASSES = 11
INK_THRESHOLD = 0.5
CLASS_NAMES = ("background",) + tuple(f"digit {d}" for d in range(10))
_SPLIT_CODES = {"train": 0, "test": 1, "all": 2}
_TASK_CODE = 4  # beside zoo.tasks' 1-3: its own random stream
_MAX_PLACEMENT_TRIES = 20


def _check_range(value, name, low, high, integer=False):
    try:
        first, second = value
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high), got {name}={value!r}.") from None
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if not (isinstance(first, kinds) and isinstance(second, kinds) and low <= first <= second):
        raise ValueError(
            f"`{name}` must be (low, high) with {low} <= low <= high"
            + (" (integers)" if integer else "")
            + f", got {name}={value!r}."
        )
    if high is not None and second > high:
        raise ValueError(f"`{name}` high must be at most {high}, got {name}={value!r}.")
    return first, second


def _texture(rng, height, width):
    """A float32 (height, width, 3) background in [0, 1] and whether it is light."""
    light = rng.random() < 0.5
    base = rng.uniform(0.6, 0.9, 3) if light else rng.uniform(0.1, 0.4, 3)
    # smooth colour noise: a coarse random grid, bilinearly upsampled
    cells = rng.integers(3, 7)
    grid = rng.uniform(-1.0, 1.0, (cells, cells, 3))
    rows = np.linspace(0, cells - 1, height)
    cols = np.linspace(0, cells - 1, width)
    r0 = np.minimum(np.floor(rows).astype(int), cells - 2)
    c0 = np.minimum(np.floor(cols).astype(int), cells - 2)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    noise = (
        (1 - fr) * (1 - fc) * grid[r0][:, c0]
        + (1 - fr) * fc * grid[r0][:, c0 + 1]
        + fr * (1 - fc) * grid[r0 + 1][:, c0]
        + fr * fc * grid[r0 + 1][:, c0 + 1]
    )
    # a grating: stripes of a random period (4 to 16 px) and direction
    period, angle, phase = rng.uniform(4.0, 16.0), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    stripes = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
    image = base + 0.08 * noise + 0.06 * stripes[..., None] * rng.uniform(-1.0, 1.0, 3)
    return np.clip(image, 0.0, 1.0).astype(np.float32), light


def _digit_colour(rng, light_background):
    """A colour that stands out from the background: dark on light, bright on dark."""
    return (rng.uniform(0.0, 0.3, 3) if light_background else rng.uniform(0.7, 1.0, 3)).astype(
        np.float32
    )


def _ink_patch(digit, angle, scale):
    """The digit rotated and scaled about its centre, cropped to its ink's bounding box."""
    theta = np.deg2rad(angle)
    side = int(np.ceil(DIGIT_SIZE * scale * (abs(np.cos(theta)) + abs(np.sin(theta))))) + 2
    patch = _rotate_scale(digit, angle, scale, side)
    ink_rows = np.flatnonzero(patch.max(axis=1) > 0)
    ink_cols = np.flatnonzero(patch.max(axis=0) > 0)
    return patch[ink_rows[0] : ink_rows[-1] + 1, ink_cols[0] : ink_cols[-1] + 1]


def _overlap(box, boxes):
    """Largest share of the smaller box that `box` covers of any of `boxes`."""
    top, left, height, width = box
    worst = 0.0
    for other_top, other_left, other_height, other_width in boxes:
        rows = min(top + height, other_top + other_height) - max(top, other_top)
        cols = min(left + width, other_left + other_width) - max(left, other_left)
        if rows > 0 and cols > 0:
            smaller = min(height * width, other_height * other_width)
            worst = max(worst, rows * cols / smaller)
    return worst


def digit_scenes(
    split="train",
    num_scenes=None,
    size=64,
    digits_per_scene=(2, 4),
    scale_range=(0.8, 1.3),
    max_angle=15.0,
    max_overlap=0.2,
    seed=0,
):
    """Scenes of several MNIST digits on textured backgrounds, with per-pixel labels.

    Digits are drawn from `zoo.datasets.mnist_subset(split)`: the digits of the split in a
    seeded random order, each used once before any is used again. Each is rotated by an
    angle uniform in `[-max_angle, max_angle]` degrees and scaled by a factor uniform in
    `scale_range` (bilinear resampling, `zoo.tasks.rts_mnist`'s), painted in a colour that
    contrasts with the background (dark on light backgrounds, bright on dark ones), and its
    ink's bounding box placed uniformly on the canvas, re-drawn (up to 20 times) while it
    covers more than `max_overlap` of an earlier digit's box.

    Args:
        split: `"train"`, `"test"` or `"all"` (see `zoo.datasets.mnist_subset`).
        num_scenes: number of scenes; default: one digit of the split per slot on average,
            `len(split digits) // mean(digits_per_scene)` (train 1,333, test 333 at (2, 4)).
        size: canvas side, or `(height, width)`; 64 by default, larger works the same way
            (each side at least 48).
        digits_per_scene: `(low, high)`: each scene holds a count uniform in it, `1 <= low`.
        scale_range: `(low, high)` digit scale factors, `0.5 <= low <= high <= 1.6`.
        max_angle: largest rotation in degrees, in [0, 45].
        max_overlap: largest share of an earlier digit's box a new digit may cover, in
            [0, 1] (when 20 draws all overlap more, the last one is kept).
        seed: non-negative integer; every random draw is a function of it and `split`.

    Returns:
        `(images, labels, metadata)`: images float32 `(N, H, W, 3)` in [0, 1]; labels int32
        `(N, H, W)` with 0 = background and `1 + d` = a stroke of digit `d`
        (`zoo.scenes.NUM_CLASSES` = 11 classes); metadata, numpy arrays of `(N, K)` rows
        (K = `digits_per_scene[1]`, unused slots -1 / 0) in painting order: `sources`
        (index into `mnist_subset(split)`), `digits` (0-9), `angles`, `scales`, `offsets`
        `(N, K, 2)` (top-left corner of the digit's ink box on the canvas), `colours`
        `(N, K, 3)`, and `counts` `(N,)`.
    """
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(side, (int, np.integer)) and side >= 48 for side in size)
    ):
        raise ValueError(f"`size` must be an integer >= 48 or (height, width), got size={size!r}.")
    height, width = int(size[0]), int(size[1])
    low_count, high_count = _check_range(digits_per_scene, "digits_per_scene", 1, None, True)
    low_scale, high_scale = _check_range(scale_range, "scale_range", 0.5, 1.6)
    if not 0 <= max_angle <= 45:
        raise ValueError(f"`max_angle` must be in [0, 45], got max_angle={max_angle!r}.")
    if not 0 <= max_overlap <= 1:
        raise ValueError(f"`max_overlap` must be in [0, 1], got max_overlap={max_overlap!r}.")
    if split not in _SPLIT_CODES:
        raise ValueError(f"`split` must be one of {tuple(_SPLIT_CODES)}, got split={split!r}.")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got seed={seed!r}.")
    digits, digit_labels = datasets.mnist_subset(split)
    if num_scenes is None:
        num_scenes = int(len(digit_labels) // ((low_count + high_count) / 2))
    if not isinstance(num_scenes, (int, np.integer)) or num_scenes < 1:
        raise ValueError(f"`num_scenes` must be a positive integer, got {num_scenes!r}.")

    rng = np.random.default_rng([int(seed), _TASK_CODE, _SPLIT_CODES[split]])
    counts = rng.integers(low_count, high_count + 1, size=num_scenes)
    needed = int(counts.sum())
    order = np.concatenate(
        [rng.permutation(len(digit_labels)) for _ in range(-(-needed // len(digit_labels)))]
    )[:needed]
    k = high_count
    meta = {
        "sources": np.full((num_scenes, k), -1, np.int64),
        "digits": np.full((num_scenes, k), -1, np.int64),
        "angles": np.zeros((num_scenes, k), np.float64),
        "scales": np.zeros((num_scenes, k), np.float64),
        "offsets": np.zeros((num_scenes, k, 2), np.int64),
        "colours": np.zeros((num_scenes, k, 3), np.float32),
        "counts": counts.astype(np.int64),
    }
    images = np.empty((num_scenes, height, width, 3), np.float32)
    labels = np.zeros((num_scenes, height, width), np.int32)
    used = 0
    for i in range(num_scenes):
        canvas, light = _texture(rng, height, width)
        boxes = []
        for j in range(counts[i]):
            source = order[used]
            used += 1
            angle = rng.uniform(-max_angle, max_angle)
            scale = rng.uniform(low_scale, high_scale)
            colour = _digit_colour(rng, light)
            ink = _ink_patch(digits[source, :, :, 0], angle, scale)
            box_h, box_w = ink.shape
            for _ in range(_MAX_PLACEMENT_TRIES):
                top = int(rng.integers(0, height - box_h + 1))
                left = int(rng.integers(0, width - box_w + 1))
                if _overlap((top, left, box_h, box_w), boxes) <= max_overlap:
                    break
            boxes.append((top, left, box_h, box_w))
            window = canvas[top : top + box_h, left : left + box_w]
            alpha = ink[..., None]
            window[...] = (1.0 - alpha) * window + alpha * colour
            region = labels[i, top : top + box_h, left : left + box_w]
            region[ink >= INK_THRESHOLD] = 1 + digit_labels[source]
            meta["sources"][i, j] = source
            meta["digits"][i, j] = digit_labels[source]
            meta["angles"][i, j] = angle
            meta["scales"][i, j] = scale
            meta["offsets"][i, j] = (top, left)
            meta["colours"][i, j] = colour
        images[i] = canvas
    return images, labels, meta


def palette(num_classes=NUM_CLASSES):
    """A uint8 `(num_classes, 3)` colour per class: PASCAL VOC's label colour map (class 0
    black; the bits of the class index spread over the high bits of R, G and B), so masks
    look as segmentation users expect; at most 256 classes."""
    if not isinstance(num_classes, (int, np.integer)) or not 1 <= num_classes <= 256:
        raise ValueError(f"`num_classes` must be in [1, 256], got {num_classes!r}.")
    colours = np.zeros((num_classes, 3), np.uint8)
    for index in range(num_classes):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (red, green, blue)
    return colours


def mask_png(class_ids, num_classes=NUM_CLASSES, colours=None):
    """A `(H, W)` integer class map -> PNG bytes of a palette image: each pixel stores its
    class id (Pillow reads them back with `np.asarray(Image.open(...))`), shown in
    `palette(num_classes)` colours, or in `colours` (uint8 `(num_classes, 3)`, e.g.
    `zoo.labels.palette("cityscapes")`; `num_classes` is then its length)."""
    if colours is not None:
        colours = np.asarray(colours, np.uint8)
        if colours.ndim != 2 or colours.shape[1] != 3 or not 1 <= len(colours) <= 256:
            raise ValueError(f"colours must be (num_classes <= 256, 3), got {colours.shape}")
        num_classes = len(colours)
    else:
        colours = palette(num_classes)
    import io

    from PIL import Image

    class_ids = np.asarray(class_ids)
    if class_ids.ndim != 2:
        raise ValueError(f"a mask is (height, width), got shape {class_ids.shape}")
    if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= num_classes):
        raise ValueError(
            f"class ids must be in [0, {num_classes}), got [{class_ids.min()}, {class_ids.max()}]"
        )
    height, width = class_ids.shape
    image = Image.frombytes("P", (width, height), class_ids.astype(np.uint8).tobytes())
    image.putpalette(colours.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
