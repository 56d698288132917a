"""The attention signatures: predictions plus the attention map of each attention layer.

`serving.export(model, ..., attention_signature=True)` adds a signature `attention` with the
inputs and outputs of `serving_default` plus, for every attention layer of the model (an
`keras_attention` layer called at the top level of a functional or Sequential model, whose
map has a layout listed below), the outputs

- `attention/<layer name>`: the map, uint8 `(batch, height, width)` on a common grid (the
  model input's height and width unless `size` says otherwise), or uint8 `(batch, channels)`
  for a channel gate;
- `attention/<layer name>/scale` and `attention/<layer name>/offset`: float32 `(batch,)`; the
  map is `offset + scale * map`, within `scale / 2` of the float32 map (each sample's map is
  quantised between its own minimum and maximum: `scale = (max - min) / 255`).

With `dtype="float16"` (or `"float32"`) the maps are sent as they are, without scale and
offset. TF Serving's REST API cannot write float16 tensors as JSON (the real server and this
one answer 400 `Failed to write JSON value for tensor type: half`), so float16 is for gRPC;
uint8 works over both. Keras forbids `/` in layer names, so the output keys of two layers
never collide.

When the export also has an image signature (`serving_images`), a second signature
`serving_images_attention` takes the same encoded images and returns its `probabilities`,
`classes` and `scores` plus the same maps.

How each layer's map becomes one picture (`H x W`: the layer's input feature map):

- a sampling grid (`SpatialTransformer`): its footprint on the `H x W` input, the total
  bilinear weight with which the output reads each input pixel (1 everywhere for the
  identity transform, 0 where nothing is read);
- pairwise attention over positions, `(batch, [heads,] H*W, L')` (non-local, position,
  multi-head self-attention): the attention each key position receives, averaged over heads
  and queries, on the key grid (`H x W`, or `H/2 x W/2` for subsampled keys);
- a map `(batch, h, w, ...)` whose `h x w` is the layer's input or output size (spatial
  gates, masks, window weights): the mean over the trailing axes;
- channel gates `(batch, 1, 1, C)` and channel-pair attention `(batch, C, C)` (the attention
  each channel receives, averaged over the queries): `(batch, C)`, not resized;

then bilinearly resized (half-pixel centres, as `tf.image.resize`) to the common grid.
Layers whose maps fit none of these (halo attention's blocks, CGNL's single weight, 1D or
3D inputs) are left out of `attention_signature=True` with a warning, and rejected when
named.

Both signatures are plain SavedModel signatures: TF Serving needs nothing new to serve them.
`serving.Client.predict` returns the maps dequantised (float32) under `attention/<layer>`.
"""

import dataclasses
import warnings

ATTENTION_SIGNATURE_DEFAULTS = dict(
    layers=None,
    signature_name="attention",
    size=None,
    dtype="uint8",
)
DTYPES = ("uint8", "float16", "float32")
KEY_PREFIX = "attention/"
SCALE_SUFFIX = "/scale"
OFFSET_SUFFIX = "/offset"
IMAGE_SUFFIX = "_attention"  # serving_images -> serving_images_attention


def map_key(layer_name):
    """The output key of a layer's map."""
    return KEY_PREFIX + layer_name


@dataclasses.dataclass(frozen=True)
class MapPlan:
    """How one layer's map is read and laid out.

    Attributes:
        layer: the Keras layer.
        key: its output key, `attention/<layer name>`.
        kind: "sampling", "pairs", "spatial" or "channel" (see the module docstring).
        grid: `(h, w)` of the map before resizing, or `(C,)` for a channel map.
    """

    layer: object
    key: str
    kind: str
    grid: tuple


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _layout(layer):
    """(kind, grid) of `layer`'s map, or a ValueError saying why it has none."""
    from keras_attention.layers import DualChannelAttention, SpatialTransformer

    try:
        layer_input = layer.input
        layer_output = layer.output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"attention layer {layer.name!r} must be called exactly once at the top level of "
            f"a functional or Sequential model: {error}"
        ) from error
    in_shape = tuple(_first(layer_input).shape)
    out_shape = tuple(_first(layer_output).shape)
    if len(in_shape) != 4 or None in in_shape[1:3]:
        raise ValueError(
            f"attention layer {layer.name!r}: the attention signature draws maps of 2D "
            f"feature maps with a static height and width; its input has shape {in_shape}"
        )
    _, spec = layer.compute_output_spec(layer_input, training=False, return_attention=True)
    shape = tuple(spec.shape)
    height, width = in_shape[1:3]
    positions = height * width
    if isinstance(layer, SpatialTransformer):
        return "sampling", (height, width)
    if isinstance(layer, DualChannelAttention):
        return "channel", (shape[-1],)
    if len(shape) == 4 and shape[1:3] == (1, 1):
        return "channel", (shape[-1],)
    if len(shape) in (3, 4) and shape[-2] == positions and positions > 1:
        for grid in ((height, width), (height // 2, width // 2)):
            if grid[0] * grid[1] == shape[-1]:
                return "pairs", grid
    sizes = {in_shape[1:3]}
    if len(out_shape) == 4:
        sizes.add(out_shape[1:3])
    if len(shape) >= 3 and shape[1:3] in sizes and shape[1] * shape[2] > 1:
        return "spatial", shape[1:3]
    raise ValueError(
        f"the attention map of layer {layer.name!r} ({type(layer).__name__}) has shape "
        f"{shape}, with no spatial or channel layout the attention signature can draw"
    )


def _attention_layers(model):
    from keras_attention.layers.base import AttentionLayer

    return [layer for layer in model.layers if isinstance(layer, AttentionLayer)]


def attention_options(model, options):
    """The checked options of `export(attention_signature=...)`, with `plans`, the list of
    `MapPlan`s of the chosen layers.

    `options`: True (every attention layer with a map layout), a list of layer names, or a
    dict of `layers` (None or a list of names), `signature_name` ("attention"), `size`
    ((height, width) of the common grid; default the model input's) and `dtype` ("uint8",
    "float16" or "float32")."""
    if options is True:
        options = {}
    elif isinstance(options, (list, tuple)):
        options = {"layers": list(options)}
    elif not isinstance(options, dict):
        raise ValueError(
            "attention_signature must be True, a list of layer names or a dict of options, "
            f"got {options!r}"
        )
    unknown = set(options) - set(ATTENTION_SIGNATURE_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown attention_signature options {sorted(unknown)}; "
            f"valid: {sorted(ATTENTION_SIGNATURE_DEFAULTS)}"
        )
    options = {**ATTENTION_SIGNATURE_DEFAULTS, **options}
    if options["dtype"] not in DTYPES:
        raise ValueError(
            f"attention_signature dtype must be one of {DTYPES}, got {options['dtype']!r}"
        )
    if options["signature_name"] == "serving_default":
        raise ValueError("the attention signature needs its own name, not serving_default")
    if not getattr(model, "inputs", None):
        raise ValueError("attention_signature needs a built functional or Sequential model")
    size = options["size"]
    if size is None:
        shape = tuple(model.inputs[0].shape)
        size = shape[1:3] if len(shape) == 4 else None
        if size is None or None in size:
            raise ValueError(
                f"the model input {shape} has no static height and width: pass "
                "attention_signature=dict(size=(height, width)) for the maps' common grid"
            )
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f"attention_signature size must be (height, width), got {size!r}")
    options["size"] = size
    names = options["layers"]
    if names is None:
        plans, skipped = [], []
        for layer in _attention_layers(model):
            try:
                plans.append(MapPlan(layer, map_key(layer.name), *_layout(layer)))
            except ValueError as error:
                skipped.append(str(error))
        if skipped:
            warnings.warn(
                "attention_signature leaves out: " + "; ".join(skipped), UserWarning, stacklevel=3
            )
        if not plans:
            raise ValueError(
                f"model {model.name!r} has no attention layer whose map the attention "
                "signature can draw"
            )
    else:
        if isinstance(names, str) or not names:
            raise ValueError(
                f"attention_signature layers must be a non-empty list of names, got {names!r}"
            )
        known = {layer.name: layer for layer in _attention_layers(model)}
        plans = []
        for name in names:
            if name not in known:
                kind = "not an attention layer" if _has_layer(model, name) else "no such layer"
                raise ValueError(
                    f"attention_signature layer {name!r}: {kind} of model {model.name!r}; "
                    f"its attention layers: {sorted(known) or 'none'}"
                )
            plans.append(MapPlan(known[name], map_key(name), *_layout(known[name])))
        if len({plan.key for plan in plans}) != len(plans):
            raise ValueError(f"attention_signature layers named twice: {names}")
    options["plans"] = plans
    return options


def _has_layer(model, name):
    try:
        model.get_layer(name)
    except ValueError:
        return False
    return True


def _footprint(grid, height, width, align_corners, tf):
    """`(B, height, width)`: the total bilinear weight with which a `(B, h, w, 2)` sampling
    grid reads each pixel of a `height x width` input (as `grid_sample` with zero padding)."""
    from keras_attention.layers.spatial_transformer import unnormalize

    grid = tf.cast(grid, tf.float32)
    x = unnormalize(grid[..., 0], width, align_corners)
    y = unnormalize(grid[..., 1], height, align_corners)
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    batch = tf.shape(grid)[0]
    offsets = tf.reshape(tf.range(batch) * (height * width), (-1, 1, 1))
    total = tf.zeros((batch * height * width,), tf.float32)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        yi = y0 + dy
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi = x0 + dx
            valid = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            index = offsets + tf.clip_by_value(yi, 0, height - 1) * width
            index += tf.clip_by_value(xi, 0, width - 1)
            weight = wy * wx * tf.cast(valid, tf.float32)
            total += tf.math.unsorted_segment_sum(
                tf.reshape(weight, (-1,)), tf.reshape(index, (-1,)), batch * height * width
            )
    return tf.reshape(total, (batch, height, width))


def _layout_map(attention, plan, tf):
    """The float32 picture of one map: `(B, h, w)` on its own grid, or `(B, C)`."""
    attention = tf.cast(attention, tf.float32)
    batch = tf.shape(attention)[0]
    if plan.kind == "sampling":
        return _footprint(attention, *plan.grid, plan.layer.align_corners, tf)
    if plan.kind == "channel":
        if attention.shape.rank == 3:  # (B, C, C): what each channel receives
            return tf.reduce_mean(attention, axis=1)
        return tf.reshape(attention, (batch, plan.grid[0]))
    if plan.kind == "pairs":
        keys = tf.reduce_mean(attention, axis=list(range(1, attention.shape.rank - 1)))
        return tf.reshape(keys, (batch, *plan.grid))
    return tf.reduce_mean(tf.reshape(attention, (batch, *plan.grid, -1)), axis=-1)


def _resize(picture, size, tf):
    return tf.image.resize(picture[..., None], size, method="bilinear")[..., 0]


def _encode(key, picture, dtype, tf):
    """The outputs of one map: the map in `dtype`, with scale and offset for uint8."""
    if dtype != "uint8":
        return {key: tf.cast(picture, tf.as_dtype(dtype))}
    axes = list(range(1, picture.shape.rank))
    low = tf.reduce_min(picture, axis=axes)
    scale = (tf.reduce_max(picture, axis=axes) - low) / 255.0
    expand = (-1,) + (1,) * len(axes)
    steps = tf.math.divide_no_nan(picture - tf.reshape(low, expand), tf.reshape(scale, expand))
    quantised = tf.cast(tf.clip_by_value(tf.round(steps), 0.0, 255.0), tf.uint8)
    return {key: quantised, key + SCALE_SUFFIX: scale, key + OFFSET_SUFFIX: low}


class _TappedModel:
    """Calls `model` once and keeps, beside its outputs, the encoded maps of that call
    (`maps`): the model's own graph gives each planned layer's input, and the layer runs
    again on it with `return_attention=True`, as `keras_attention.attention_map` does."""

    def __init__(self, model, options):
        import keras

        self.inputs = model.inputs
        self.plans, self.size, self.dtype = options["plans"], options["size"], options["dtype"]
        try:
            predictions = model.output
        except AttributeError:  # a Sequential model keeps only the flat list
            predictions = model.outputs[0] if len(model.outputs) == 1 else model.outputs
        taps = [plan.layer.input for plan in self.plans]
        self._graph = keras.Model(model.inputs, [predictions, taps], name=f"{model.name}_taps")
        self.maps = None

    def __call__(self, inputs, training=False):
        import tensorflow as tf

        predictions, taps = self._graph(inputs, training=training)
        self.maps = {}
        for plan, tap in zip(self.plans, taps):
            _, attention = plan.layer(tap, training=training, return_attention=True)
            picture = _layout_map(attention, plan, tf)
            if plan.kind != "channel":
                picture = _resize(picture, self.size, tf)
            self.maps.update(_encode(plan.key, picture, self.dtype, tf))
        return predictions


def _with_maps(function, tapped):
    """`function` (whose model is `tapped`) with the maps added to its outputs."""

    def serve(*args):
        outputs = function(*args)
        clash = set(outputs) & set(tapped.maps)
        if clash:
            raise ValueError(f"model outputs {sorted(clash)} clash with the attention maps' keys")
        return {**outputs, **tapped.maps}

    return serve


def attention_functions(model, options, image_options, tf):
    """{signature name: tf.function} of the attention signatures: `options["signature_name"]`
    (the `serving_default` inputs) and, with `image_options`, the image signature's name +
    `_attention` (encoded images)."""
    from serving.saved_model import _image_function, _input_specs, _serve_fn

    def to_float32(value):
        value = tf.convert_to_tensor(value)
        return tf.cast(value, tf.float32) if value.dtype.is_floating else value

    tapped = _TappedModel(model, options)
    functions = {
        options["signature_name"]: tf.function(
            _with_maps(_serve_fn(tapped, to_float32), tapped),
            input_signature=_input_specs(model, tf),
            autograph=False,
        )
    }
    if image_options:
        images = _image_function(tapped, image_options, tf).python_function
        functions[image_options["signature_name"] + IMAGE_SUFFIX] = tf.function(
            _with_maps(images, tapped),
            input_signature=[tf.TensorSpec((None,), tf.string, name="images")],
            autograph=False,
        )
    return functions
