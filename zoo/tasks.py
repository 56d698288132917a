"""Attention benchmarks built from the shipped MNIST subset: translated, cluttered, RTS,
and clips of moving digits.

Every task is a pure function of `(split, seed, options)`: the same arguments give the
same arrays on every machine (numpy's PCG64 generator, no TF randomness). Each task
draws its digits from `zoo.datasets.mnist_subset(split)` alone, and cluttered MNIST cuts
its clutter from *other* digits of the same split, so no pixel of a test digit ever
appears in a training image. Each function returns `(images, labels, metadata)`: float32
images in [0, 1] of shape `(N, size, size, 1)`, int64 labels (the labels of
`mnist_subset(split)`, in the same order) and a dict of numpy arrays recording every
random draw, enough to rebuild each image (the tests do).

`as_tf_dataset` turns any of them into a `tf.data.Dataset` of `(image, label)` pairs.
"""

import numpy as np

from zoo import datasets

DIGIT_SIZE = 28
_SPLIT_CODES = {"train": 0, "test": 1, "all": 2}
_TASK_CODES = {"translated": 1, "cluttered": 2, "rts": 3, "moving_clips": 4}


def _rng(task, split, seed):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got seed={seed!r}.")
    # A different stream per (task, split), so a seed means the same thing everywhere
    # without train and test sharing their placements.
    return np.random.default_rng([int(seed), _TASK_CODES[task], _SPLIT_CODES[split]])


def ink_boxes(digits, offsets):
    """The tight box around each digit's ink on the canvas, `(N, 4)` int64 rows of
    `(top, left, bottom, right)` with `bottom` and `right` exclusive; `digits` are the
    `(N, 28, 28, 1)` digits and `offsets` the `(N, 2)` canvas corners of their 28x28 frames.
    A digit without ink gets its whole frame."""
    boxes = np.zeros((len(digits), 4), np.int64)
    for i, (digit, (row, col)) in enumerate(zip(digits, offsets)):
        ink = digit[..., 0] > 0
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        if rows.size == 0:
            rows = cols = np.array([0, DIGIT_SIZE - 1])
        boxes[i] = (row + rows[0], col + cols[0], row + rows[-1] + 1, col + cols[-1] + 1)
    return boxes


def _check_size(size, needed, what):
    if not isinstance(size, (int, np.integer)) or size < needed:
        raise ValueError(f"`size` must be an integer >= {needed} ({what}), got size={size!r}.")


def translated_mnist(split="train", size=60, seed=0, return_boxes=False):
    """Each digit pasted unchanged at a uniformly random position of a blank canvas.

    This is the 60x60 translated MNIST of the recurrent attention model paper
    (Mnih et al., 2014).

    Args:
        split: `"train"`, `"test"` or `"all"` (see `zoo.datasets.mnist_subset`).
        size: canvas height and width, at least 28.
        seed: non-negative integer; the placements are a function of it.
        return_boxes: also record each digit's ink box (`metadata["boxes"]`, see
            `ink_boxes`); the images and the other arrays do not change.

    Returns:
        `(images, labels, metadata)`; `metadata["offsets"]` is an int64 array `(N, 2)`:
        the (row, column) of each digit's top-left corner.
    """
    _check_size(size, DIGIT_SIZE, "the digit is 28x28")
    digits, labels = datasets.mnist_subset(split)
    rng = _rng("translated", split, seed)
    offsets = rng.integers(0, size - DIGIT_SIZE + 1, size=(len(labels), 2))
    images = np.zeros((len(labels), size, size, 1), np.float32)
    for i, (row, col) in enumerate(offsets):
        images[i, row : row + DIGIT_SIZE, col : col + DIGIT_SIZE] = digits[i]
    metadata = {"offsets": offsets.astype(np.int64)}
    if return_boxes:
        metadata["boxes"] = ink_boxes(digits, offsets)
    return images, labels, metadata


def cluttered_mnist(
    split="train", size=60, num_clutter=4, clutter_size=8, seed=0, return_boxes=False
):
    """Translated MNIST plus `num_clutter` random crops of other digits of the same split.

    Each clutter piece is a `clutter_size` square cut at a random position from another
    digit of `split` (never the digit itself), pasted at a random position; the digit goes
    at a random position as in `translated_mnist`. Pieces and digit combine by a pixel-wise
    maximum, so the digit's ink is never dimmed. Mnih et al. (2014) use 60x60 with 4 pieces
    and 100x100 with 8 pieces, both of 8x8.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        size: canvas height and width, at least 28.
        num_clutter: number of clutter pieces per image, >= 0.
        clutter_size: side of each square piece, 1 to 28.
        seed: non-negative integer.
        return_boxes: also record the box around each digit's own ink (`metadata["boxes"]`,
            see `ink_boxes`; clutter inside it is not the digit's); the images and the other
            arrays do not change.

    Returns:
        `(images, labels, metadata)` with metadata arrays `offsets` `(N, 2)` (digit corner),
        `clutter_sources` `(N, K)` (index into `mnist_subset(split)` of each piece's digit),
        `clutter_crops` `(N, K, 2)` (corner of the piece in its source digit) and
        `clutter_offsets` `(N, K, 2)` (corner of the piece on the canvas).
    """
    _check_size(size, DIGIT_SIZE, "the digit is 28x28")
    if not isinstance(num_clutter, (int, np.integer)) or num_clutter < 0:
        raise ValueError(f"`num_clutter` must be an integer >= 0, got {num_clutter!r}.")
    if not isinstance(clutter_size, (int, np.integer)) or not 1 <= clutter_size <= DIGIT_SIZE:
        raise ValueError(f"`clutter_size` must be an integer in [1, 28], got {clutter_size!r}.")
    digits, labels = datasets.mnist_subset(split)
    n = len(labels)
    rng = _rng("cluttered", split, seed)
    offsets = rng.integers(0, size - DIGIT_SIZE + 1, size=(n, 2))
    # Draw from the n - 1 other digits: shift indices >= i up by one.
    sources = rng.integers(0, n - 1, size=(n, num_clutter))
    sources = sources + (sources >= np.arange(n)[:, None])
    crops = rng.integers(0, DIGIT_SIZE - clutter_size + 1, size=(n, num_clutter, 2))
    clutter_offsets = rng.integers(0, size - clutter_size + 1, size=(n, num_clutter, 2))
    images = np.zeros((n, size, size, 1), np.float32)
    c = clutter_size
    for i in range(n):
        canvas = images[i]
        for k in range(num_clutter):
            (sr, sc), (r, col) = crops[i, k], clutter_offsets[i, k]
            piece = digits[sources[i, k], sr : sr + c, sc : sc + c]
            np.maximum(
                canvas[r : r + c, col : col + c], piece, out=canvas[r : r + c, col : col + c]
            )
        row, col = offsets[i]
        window = canvas[row : row + DIGIT_SIZE, col : col + DIGIT_SIZE]
        np.maximum(window, digits[i], out=window)
    metadata = {
        "offsets": offsets.astype(np.int64),
        "clutter_sources": sources.astype(np.int64),
        "clutter_crops": crops.astype(np.int64),
        "clutter_offsets": clutter_offsets.astype(np.int64),
    }
    if return_boxes:
        metadata["boxes"] = ink_boxes(digits, offsets)
    return images, labels, metadata


def _rotate_scale(digit, angle_deg, scale, out_size):
    """Bilinear resampling of `digit` (28, 28) rotated by `angle_deg` and scaled by `scale`
    about its centre, into an `out_size` square whose centre is the digit's centre."""
    theta = np.deg2rad(angle_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    centre_out = (out_size - 1) / 2.0
    centre_in = (DIGIT_SIZE - 1) / 2.0
    rows, cols = np.meshgrid(np.arange(out_size), np.arange(out_size), indexing="ij")
    y, x = rows - centre_out, cols - centre_out
    # Inverse map: output pixel -> source pixel (counter-clockwise rotation on screen
    # for positive angles: rows grow downwards).
    src_x = (cos * x - sin * y) / scale + centre_in
    src_y = (sin * x + cos * y) / scale + centre_in
    x0, y0 = np.floor(src_x).astype(np.int64), np.floor(src_y).astype(np.int64)
    fx, fy = src_x - x0, src_y - y0
    padded = np.pad(digit, 1)  # zeros outside the digit

    def at(yy, xx):
        yy = np.clip(yy + 1, 0, DIGIT_SIZE + 1)
        xx = np.clip(xx + 1, 0, DIGIT_SIZE + 1)
        return padded[yy, xx]

    out = (
        (1 - fy) * (1 - fx) * at(y0, x0)
        + (1 - fy) * fx * at(y0, x0 + 1)
        + fy * (1 - fx) * at(y0 + 1, x0)
        + fy * fx * at(y0 + 1, x0 + 1)
    )
    return out.astype(np.float32)


def rts_mnist(split="train", size=42, max_angle=90.0, scale_range=(0.7, 1.2), seed=0):
    """Rotated, scaled and translated MNIST, as in the spatial transformer paper.

    Each digit is rotated by an angle uniform in `[-max_angle, max_angle]` degrees and
    scaled by a factor uniform in `scale_range` about its centre (bilinear resampling in
    numpy, zeros outside the digit), then the bounding box of its ink is placed at a
    uniformly random position of a `size` square canvas. Jaderberg et al. (2015) use a
    42x42 canvas, scale 0.7-1.2 and rotation of ±45° for RTS (±90° for their R task);
    the default here follows issue #4, ±90°.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        size: canvas height and width, at least 34 (a scaled, rotated digit fits in 34x34).
        max_angle: largest rotation in degrees, in [0, 180].
        scale_range: `(low, high)` with `0 < low <= high <= 1.2`.
        seed: non-negative integer.

    Returns:
        `(images, labels, metadata)` with metadata arrays `angles` `(N,)` (degrees),
        `scales` `(N,)` and `offsets` `(N, 2)`: where the centre of the transformed 48x48
        working patch (the digit's centre) lands on the canvas, as (row, column) of the
        patch's top-left corner; pixels of the patch outside the canvas are ink-free.
    """
    _check_size(size, 34, "a scaled, rotated digit needs 34x34")
    if not 0 <= max_angle <= 180:
        raise ValueError(f"`max_angle` must be in [0, 180], got {max_angle!r}.")
    low, high = scale_range
    if not 0 < low <= high <= 1.2:
        raise ValueError(f"`scale_range` must satisfy 0 < low <= high <= 1.2, got {scale_range!r}.")
    digits, labels = datasets.mnist_subset(split)
    n = len(labels)
    rng = _rng("rts", split, seed)
    angles = rng.uniform(-max_angle, max_angle, size=n)
    scales = rng.uniform(low, high, size=n)
    place = rng.uniform(0.0, 1.0, size=(n, 2))
    patch_size = 48  # holds a 28x28 frame scaled by 1.2 and rotated by any angle
    images = np.zeros((n, size, size, 1), np.float32)
    offsets = np.zeros((n, 2), np.int64)
    for i in range(n):
        patch = _rotate_scale(digits[i, :, :, 0], angles[i], scales[i], patch_size)
        ink_rows = np.flatnonzero(patch.max(axis=1) > 0)
        ink_cols = np.flatnonzero(patch.max(axis=0) > 0)
        top, bottom = ink_rows[0], ink_rows[-1] + 1
        left, right = ink_cols[0], ink_cols[-1] + 1
        # Ink box (at most ~34 px) at a uniform position on the canvas.
        row = int(place[i, 0] * (size - (bottom - top) + 1))
        col = int(place[i, 1] * (size - (right - left) + 1))
        images[i, row : row + bottom - top, col : col + right - left, 0] = patch[
            top:bottom, left:right
        ]
        offsets[i] = (row - top, col - left)
    return images, labels, {"angles": angles, "scales": scales, "offsets": offsets}


CLIP_DIGIT_SIZE = 14
CLIP_SPEED = 2
# Every velocity (rows, columns per frame) of chessboard speed CLIP_SPEED: the 16 integer
# vectors on the border of the 5x5 square, so the mover always travels
# CLIP_SPEED * (frames - 1) pixels along at least one axis.
CLIP_VELOCITIES = np.array(
    [
        (dy, dx)
        for dy in range(-CLIP_SPEED, CLIP_SPEED + 1)
        for dx in range(-CLIP_SPEED, CLIP_SPEED + 1)
        if max(abs(dy), abs(dx)) == CLIP_SPEED
    ],
    np.int64,
)


def clip_digits(split="train"):
    """The digits of `mnist_subset(split)` at half size (2x2 means): `(N, 14, 14)` float32."""
    digits, labels = datasets.mnist_subset(split)
    half = digits[..., 0].reshape(len(labels), CLIP_DIGIT_SIZE, 2, CLIP_DIGIT_SIZE, 2)
    return half.mean(axis=(2, 4)), labels


def moving_mnist_clips(split="train", frames=8, size=32, seed=0):
    """Clips of two digits of different classes, one still and one moving; the label is the
    class of the moving one.

    Clip `i` moves digit `i` of `mnist_subset(split)` (at half size, 14x14; see
    `clip_digits`) in a straight line at a constant integer velocity drawn from
    `CLIP_VELOCITIES` (2 pixels per frame along at least one axis), from a start chosen so
    that it stays whole on the canvas in every frame. The still digit is another digit of
    the same split, of another class, at a uniformly random position of every frame. The
    two combine by a pixel-wise maximum, so either may cover part of the other.

    Both digits are visible in every frame, so a model that looks at one frame at a time
    sees two equally plausible answers: only comparing frames (where did something move?)
    says which digit is the label.

    Args:
        split: `"train"`, `"test"` or `"all"` (see `zoo.datasets.mnist_subset`).
        frames: frames per clip, at least 2.
        size: canvas height and width; the mover needs `14 + 2 * (frames - 1)` pixels.
        seed: non-negative integer; every draw (partner, positions, velocity) is a function
            of it.

    Returns:
        `(clips, labels, metadata)`: clips float32 in [0, 1] of shape
        `(N, frames, size, size, 1)`, labels int64 `(N,)` (the labels of
        `mnist_subset(split)`, in order), and metadata arrays `still` `(N,)` (index of the
        still digit in `mnist_subset(split)`), `still_offsets` `(N, 2)` (its top-left
        corner), `start` `(N, 2)` (the mover's top-left corner in frame 0) and `velocity`
        `(N, 2)`: in frame `t` the mover's corner is `start + t * velocity`.
    """
    if not isinstance(frames, (int, np.integer)) or frames < 2:
        raise ValueError(f"`frames` must be an integer >= 2, got frames={frames!r}.")
    travel = CLIP_SPEED * (frames - 1)
    _check_size(size, CLIP_DIGIT_SIZE + travel, f"a 14x14 digit moving over {frames} frames")
    digits, labels = clip_digits(split)
    n = len(labels)
    rng = _rng("moving_clips", split, seed)
    # the still digit: another class, redrawn until it is one
    still = rng.integers(0, n, size=n)
    clash = labels[still] == labels
    while clash.any():
        still[clash] = rng.integers(0, n, size=int(clash.sum()))
        clash = labels[still] == labels
    velocity = CLIP_VELOCITIES[rng.integers(0, len(CLIP_VELOCITIES), size=n)]
    room = size - CLIP_DIGIT_SIZE  # the largest corner coordinate
    # start in [max(0, -travel_axis), room - max(0, travel_axis)] per axis
    low = np.maximum(0, -(frames - 1) * velocity)
    high = room - np.maximum(0, (frames - 1) * velocity)
    start = low + np.floor(rng.uniform(0.0, 1.0, size=(n, 2)) * (high - low + 1)).astype(np.int64)
    still_offsets = rng.integers(0, room + 1, size=(n, 2))
    clips = np.zeros((n, frames, size, size, 1), np.float32)
    d = CLIP_DIGIT_SIZE
    for i in range(n):
        row, col = still_offsets[i]
        clips[i, :, row : row + d, col : col + d, 0] = digits[still[i]]
        for t in range(frames):
            row, col = start[i] + t * velocity[i]
            window = clips[i, t, row : row + d, col : col + d, 0]
            np.maximum(window, digits[i], out=window)
    metadata = {
        "still": still.astype(np.int64),
        "still_offsets": still_offsets.astype(np.int64),
        "start": start,
        "velocity": velocity,
    }
    return clips, labels, metadata


TASKS = {
    "translated_mnist": translated_mnist,
    "cluttered_mnist": cluttered_mnist,
    "rts_mnist": rts_mnist,
    "moving_mnist_clips": moving_mnist_clips,
}


def as_tf_dataset(images, labels, batch_size=64, shuffle=False, seed=0):
    """A `tf.data.Dataset` of `(image, label)` batches from a task's arrays.

    Args:
        images: the first entry a task function returns.
        labels: the second entry a task function returns.
        batch_size: batch size (the last batch may be smaller).
        shuffle: shuffle the examples (with `seed`) every epoch.
        seed: shuffle seed.
    """
    import tensorflow as tf  # noqa: PLC0415 - tf.data only when asked for

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
