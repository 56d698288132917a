"""Generated 2D pose data: stick figures with known joints, their heatmap targets and PCK.

`stick_figures(split, seed)` is a pure function of its arguments (numpy's PCG64 generator):
the same arguments give the same arrays on every machine. Each figure has `len(JOINTS)`
joints; its limbs are anti-aliased line segments between joints and its head a filled disc
around the head joint, so every joint lies on ink. Left limbs are drawn brighter and
thicker than right ones (a real person's left and right differ in appearance too; without
that the two sides would be indistinguishable). Random line segments of random brightness
(clutter, some as bright as limbs) and pixel noise make the task more than finding the ink.

Coordinates are `(x, y)` in input pixels, continuous, with pixel `(row, col)` covering
`[col, col + 1) x [row, row + 1)` (its centre is `(col + 0.5, row + 0.5)`).
"""

import numpy as np

JOINTS = (
    "head",
    "neck",
    "pelvis",
    "left_elbow",
    "left_hand",
    "right_elbow",
    "right_hand",
    "left_foot",
    "right_foot",
)
# (joint, joint, side): the drawn segments; side 0 the body, 1 left, 2 right
LIMBS = ((1, 2, 0), (1, 3, 1), (3, 4, 1), (1, 5, 2), (5, 6, 2), (2, 7, 1), (2, 8, 2))
# brightness and line width of each side
SIDE_INK = ((0.8, 1.6), (1.0, 2.0), (0.6, 1.2))
HEAD_RADIUS = 0.2  # of the torso length
TORSO_RANGE = (14.0, 20.0)  # neck-pelvis length in pixels
MARGIN = 3.0  # pixels between any joint and the border
CLUTTER_RANGE = (4, 9)  # random segments per image (upper bound exclusive)
NOISE_SD = 0.05
DEFAULT_COUNTS = {"train": 4000, "test": 500}
_SPLIT_CODES = {"train": 0, "test": 1}
_TASK_CODE = 5  # zoo.tasks uses 1-4


def _check_args(split, size, seed, count):
    if split not in _SPLIT_CODES:
        raise ValueError(f"`split` must be 'train' or 'test', got split={split!r}.")
    if not isinstance(size, (int, np.integer)) or size < 48:
        raise ValueError(
            f"`size` must be an integer >= 48 (a figure spans up to 51 pixels), got size={size!r}."
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got seed={seed!r}.")
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"`count` must be a positive integer, got count={count!r}.")


def _unit(angle):
    """Unit vectors `(x, y)` of angles measured from straight down (y grows downwards),
    counter-clockwise on screen towards +x."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _skeleton(rng, n):
    """`(joints (n, K, 2) relative to the neck, torso lengths (n,))`."""
    torso = rng.uniform(*TORSO_RANGE, size=n)
    body = np.deg2rad(rng.uniform(-35.0, 35.0, size=n))  # the body's lean
    # the figure's left is the viewer's right (+x when upright): its left limbs turn
    # towards +x from the body axis, its right limbs towards -x
    upper = np.deg2rad(rng.uniform(15.0, 165.0, size=(n, 2)))
    bend = np.deg2rad(rng.uniform(-100.0, 100.0, size=(n, 2)))
    legs = np.deg2rad(rng.uniform(5.0, 45.0, size=(n, 2)))
    sign = np.array([1.0, -1.0])
    joints = np.zeros((n, len(JOINTS), 2))
    t = torso[:, None]
    joints[:, 0] = -0.55 * t * _unit(body)
    joints[:, 2] = t * _unit(body)
    for side, (elbow, hand) in enumerate(((3, 4), (5, 6))):
        arm = body + sign[side] * upper[:, side]
        joints[:, elbow] = 0.6 * t * _unit(arm)
        joints[:, hand] = joints[:, elbow] + 0.5 * t * _unit(arm + sign[side] * bend[:, side])
        joints[:, 7 + side] = joints[:, 2] + 0.9 * t * _unit(body + sign[side] * legs[:, side])
    return joints, torso


def _window(grid, low, high):
    """The part of the pixel grid (and its slices) within the box `[low, high]`."""
    size = grid.shape[0]
    c0, r0 = np.clip(np.floor(low).astype(int), 0, size)
    c1, r1 = np.clip(np.ceil(high).astype(int) + 1, 0, size)
    window = (slice(r0, r1), slice(c0, c1))
    return grid[window], window


def _draw_segment(canvas, grid, a, b, ink, width):
    """Max-composite an anti-aliased segment from `a` to `b` (pixel coordinates)."""
    reach = width / 2 + 0.5
    grid, window = _window(grid, np.minimum(a, b) - reach, np.maximum(a, b) + reach)
    ab = b - a
    length2 = max(float(ab @ ab), 1e-12)
    along = np.clip(((grid - a) @ ab) / length2, 0.0, 1.0)
    distance = np.linalg.norm(grid - (a + along[..., None] * ab), axis=-1)
    part = canvas[window]
    np.maximum(part, ink * np.clip(reach - distance, 0.0, 1.0), out=part)


def _draw_disc(canvas, grid, centre, radius, ink):
    grid, window = _window(grid, centre - radius - 0.5, centre + radius + 0.5)
    distance = np.linalg.norm(grid - centre, axis=-1)
    part = canvas[window]
    np.maximum(part, ink * np.clip(radius + 0.5 - distance, 0.0, 1.0), out=part)


def stick_figures(split="train", size=64, seed=0, count=None):
    """Stick figures in random poses, positions and sizes among clutter.

    Each figure's torso (neck to pelvis) is 14-20 pixels long and leans up to 35 degrees;
    its arms (elbow and hand) and straight legs take independent random angles. The whole
    figure lies at least 3 pixels inside the canvas, at a uniformly random position. Then
    4-8 clutter segments (3-20 pixels long, brightness 0.3-1, width 1-2) and Gaussian pixel
    noise (SD 0.05) are added; the result is clipped to [0, 1].

    Args:
        split: `"train"` or `"test"`: independent random streams for the same seed.
        size: canvas height and width (at least 48).
        seed: non-negative integer; every draw is a function of `(split, seed)`.
        count: number of figures (default 4,000 for train, 500 for test). The first `m`
            figures of a larger count are those of `count=m`.

    Returns:
        `(images, joints, metadata)`: images float32 `(count, size, size, 1)` in [0, 1],
        joints float32 `(count, len(JOINTS), 2)` as `(x, y)` pixel coordinates (see the
        module docstring) in `JOINTS` order, and metadata with `torso` `(count,)` (the
        neck-pelvis distance, PCK's reference length) and `clean` `(count, size, size)`
        (the figure alone, before clutter and noise).
    """
    count = DEFAULT_COUNTS.get(split, 0) if count is None else count
    _check_args(split, size, seed, count)
    rows, cols = np.mgrid[0:size, 0:size]
    grid = np.stack([cols + 0.5, rows + 0.5], axis=-1)
    images = np.zeros((count, size, size, 1), np.float32)
    clean = np.zeros((count, size, size), np.float32)
    joints = np.zeros((count, len(JOINTS), 2), np.float32)
    torsos = np.zeros(count, np.float32)
    # one stream per figure, so a prefix of a larger count is the smaller count
    for i in range(count):
        rng = np.random.default_rng([int(seed), _TASK_CODE, _SPLIT_CODES[split], i])
        relative, torso = _skeleton(rng, 1)
        relative, torso = relative[0], float(torso[0])
        low = MARGIN - relative.min(axis=0)
        high = size - MARGIN - relative.max(axis=0)
        points = relative + low + rng.uniform(size=2) * (high - low)
        figure = np.zeros((size, size))
        _draw_disc(figure, grid, points[0], HEAD_RADIUS * torso, SIDE_INK[0][0])
        _draw_segment(figure, grid, points[0], points[1], *SIDE_INK[0])
        for a, b, side in LIMBS:
            _draw_segment(figure, grid, points[a], points[b], *SIDE_INK[side])
        canvas = figure.copy()
        for _ in range(rng.integers(*CLUTTER_RANGE)):
            start = rng.uniform(0, size, size=2)
            end = start + rng.uniform(3.0, 20.0) * _unit(rng.uniform(0, 2 * np.pi))
            _draw_segment(canvas, grid, start, end, rng.uniform(0.3, 1.0), rng.uniform(1.0, 2.0))
        canvas += rng.normal(0.0, NOISE_SD, size=canvas.shape)
        images[i, ..., 0] = np.clip(canvas, 0.0, 1.0)
        clean[i] = figure
        joints[i] = points
        torsos[i] = torso
    return images, joints, {"torso": torsos, "clean": clean}


def heatmaps(joints, size=64, stride=4, sigma=1.0):
    """Heatmap targets: for each joint a Gaussian bump (peak 1, SD `sigma` output cells)
    centred on it, on the `size // stride` square output grid whose cell `j` covers input
    pixels `[stride * j, stride * (j + 1))`.

    Args:
        joints: `(N, K, 2)` `(x, y)` pixel coordinates.

    Returns:
        float32 `(N, size // stride, size // stride, K)`.
    """
    cells = size // stride
    centres = (np.arange(cells) + 0.5) * stride
    joints = np.asarray(joints, np.float32)
    dx = (centres[None, None, :] - joints[..., 0:1]) / (sigma * stride)  # (N, K, W)
    dy = (centres[None, None, :] - joints[..., 1:2]) / (sigma * stride)  # (N, K, H)
    maps = np.exp(-0.5 * (dy[..., :, None] ** 2 + dx[..., None, :] ** 2))  # (N, K, H, W)
    return np.transpose(maps, (0, 2, 3, 1)).astype(np.float32)


def decode(maps, stride=4):
    """Joint positions from heatmaps: the argmax cell's centre, moved a quarter cell towards
    the larger of its two neighbours along each axis (Newell et al.'s evaluation).

    Args:
        maps: `(N, H, W, K)` heatmaps.
        stride: input pixels per output cell.

    Returns:
        float32 `(N, K, 2)` `(x, y)` pixel coordinates.
    """
    maps = np.asarray(maps, np.float32)
    n, height, width, k = maps.shape
    flat = maps.transpose(0, 3, 1, 2).reshape(n, k, height * width)
    index = np.argmax(flat, axis=-1)
    row, col = index // width, index % width
    planes = maps.transpose(0, 3, 1, 2)
    b, j = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def step(axis_index, limit, before, after):
        inside = (axis_index > 0) & (axis_index < limit - 1)
        difference = np.where(inside, after - before, 0.0)
        return 0.25 * np.sign(difference)

    right = planes[b, j, row, np.minimum(col + 1, width - 1)]
    left = planes[b, j, row, np.maximum(col - 1, 0)]
    below = planes[b, j, np.minimum(row + 1, height - 1), col]
    above = planes[b, j, np.maximum(row - 1, 0), col]
    x = col + 0.5 + step(col, width, left, right)
    y = row + 0.5 + step(row, height, above, below)
    return (np.stack([x, y], axis=-1) * stride).astype(np.float32)


def pck(predicted, joints, torso, threshold=0.2):
    """Percentage of correct keypoints: the share of joints whose predicted position lies
    within `threshold` x the figure's torso length (neck to pelvis) of the truth.

    Args:
        predicted: `(N, K, 2)` predicted `(x, y)`.
        joints: `(N, K, 2)` true `(x, y)`.
        torso: `(N,)` torso lengths.

    Returns:
        `(pck, correct)`: the share (a float in [0, 1]) and the `(N, K)` boolean array.
    """
    distance = np.linalg.norm(np.asarray(predicted) - np.asarray(joints), axis=-1)
    correct = distance <= threshold * np.asarray(torso)[:, None]
    return float(correct.mean()), correct
