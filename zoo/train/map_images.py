"""Attention maps as pictures: reduce a layer's map to its layout, colour it, and draw it
(spatial maps over their images, channel gates as a labelled strip with a colour bar).
Pure numpy and Pillow; writing the pictures to TensorBoard is `zoo.train.summaries`."""

import math

import numpy as np

LABEL_HEIGHT = 14  # pixels of a text line in Pillow's default font, with a margin


def _spatial_sizes(layer):
    shapes = []
    for attr in ("input", "output"):
        try:
            tensor = getattr(layer, attr)
        except (AttributeError, ValueError):
            continue
        tensor = tensor[0] if isinstance(tensor, (list, tuple)) else tensor
        if len(tensor.shape) == 4 and None not in tensor.shape[1:3]:
            shapes.append(tuple(tensor.shape[1:3]))
    return shapes


def spatial_map(attention, layer):
    """Reduce a layer's attention map to `(B, h, w)` (where it has a spatial layout), or
    return `(B, C)` for a channel-only map, or None if it has neither.

    - `(B, H, W, ...)` with (H, W) a feature-map size of the layer: mean over the rest
      (spatial gates, masks, local-window weights, per-position keys);
    - `(B, heads, L, L')` self-attention over positions: the attention each position
      receives, averaged over heads and queries, laid out on the map of size L';
    - `(B, 1, 1, C)` channel gates: `(B, C)`.
    """
    attention = np.asarray(attention, "float32")
    sizes = _spatial_sizes(layer)
    if (
        attention.ndim >= 3
        and tuple(attention.shape[1:3]) in sizes
        and attention.shape[1] * attention.shape[2] > 1
    ):
        return attention.reshape(attention.shape[:3] + (-1,)).mean(-1)
    if attention.ndim == 4 and attention.shape[1:3] == (1, 1):
        return attention[:, 0, 0, :]
    if attention.ndim == 4:
        keys = attention.mean(axis=(1, 2))  # (B, L')
        for h, w in sizes + [(s // 2, s2 // 2) for s, s2 in sizes]:
            if h * w == keys.shape[-1]:
                return keys.reshape(-1, h, w)
        side = int(round(math.sqrt(keys.shape[-1])))
        if side * side == keys.shape[-1]:
            return keys.reshape(-1, side, side)
    return None


def normalise(maps):
    """Each map (first axis) rescaled to [0, 1] by its own minimum and maximum."""
    lo = maps.min(axis=tuple(range(1, maps.ndim)), keepdims=True)
    hi = maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True)
    return (maps - lo) / np.maximum(hi - lo, 1e-12)


def heat(m):
    """A blue-green-red colour ramp of values in [0, 1]: `(..., 3)` in [0, 1]."""
    m = m[..., None]
    return np.clip(1.5 - np.abs(4.0 * m - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)


def _to_uint8(image):
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def overlay(display, maps, alpha=0.45):
    """uint8 `(B, H, W, 3)`: each `(h, w)` map upsampled (bilinear) to the image size,
    coloured, and blended over its image (`display`: `(B, H, W, 1 or 3)` in [0, 1])."""
    from PIL import Image

    height, width = display.shape[1:3]
    maps = normalise(maps)
    up = np.stack(
        [
            np.asarray(
                Image.fromarray(m.astype("float32"), mode="F").resize(
                    (width, height), Image.BILINEAR
                )
            )
            for m in maps
        ]
    )
    base = display if display.shape[-1] == 3 else np.repeat(display, 3, axis=-1)
    return _to_uint8((1 - alpha) * base + alpha * heat(np.clip(up, 0, 1)))


def _text(image, xy, text):
    from PIL import ImageDraw

    ImageDraw.Draw(image).text(xy, text, fill=(255, 255, 255))


def channel_image(weights, layer_name, row_height=8, min_width=256):
    """uint8 `(1, H, W, 3)`: a channel gate's weights for a batch, drawn as a labelled
    figure. Top: the label `<layer>: channels 0-<C-1>, one row per image`; middle: one row
    of `row_height` pixels per image, channel `c` in column band `c`, coloured on one scale
    shared by the batch (its minimum blue, maximum red); bottom: the colour bar of that
    scale with its two end values.

    Args:
        weights: `(B, C)` channel weights (a `spatial_map` of a `(B, 1, 1, C)` gate).
        layer_name: the layer the weights come from (printed in the label).
        row_height: pixels per image row.
        min_width: the strip is widened (each channel drawn `ceil(min_width / C)` pixels
            wide) so the label and the colour bar fit.
    """
    from PIL import Image

    weights = np.asarray(weights, "float32")
    batch, channels = weights.shape
    lo, hi = float(weights.min()), float(weights.max())
    scaled = (weights - lo) / max(hi - lo, 1e-12)
    band = max(1, math.ceil(min_width / channels))
    width = band * channels
    strip = np.repeat(np.repeat(heat(scaled), band, axis=1), row_height, axis=0)
    bar = np.repeat(heat(np.linspace(0.0, 1.0, width))[None], row_height, axis=0)
    height = LABEL_HEIGHT + batch * row_height + 2 + row_height + LABEL_HEIGHT
    canvas = np.zeros((height, width, 3), "float32")
    top = LABEL_HEIGHT
    canvas[top : top + batch * row_height] = strip
    bar_top = top + batch * row_height + 2
    canvas[bar_top : bar_top + row_height] = bar
    image = Image.fromarray(_to_uint8(canvas))
    _text(image, (2, 1), f"{layer_name}: channels 0-{channels - 1}, one row per image")
    low, high = f"{lo:.3g}", f"{hi:.3g}"
    _text(image, (2, bar_top + row_height + 1), low)
    _text(image, (width - 7 * len(high) - 2, bar_top + row_height + 1), high)
    return np.asarray(image)[None]
