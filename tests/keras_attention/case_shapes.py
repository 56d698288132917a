"""Shapes and attention-map shape helpers shared by the per-family harness cases."""

B, H, W, C = 2, 6, 6, 32
SHAPE = (B, H, W, C)
SMALL = (B, H, W, 16)


def channel_map(shape):
    return (shape[0], 1, 1, shape[-1])


def spatial_map(shape):
    return (shape[0], shape[1], shape[2], 1)


def full_map(shape):
    return tuple(shape)


# A 3D input to a 2D layer: the message must name the shape it got.
RANK_ERROR = ({}, (B, H, C), r"input_shape=\(2, 6, 32\)")
