"""Signatures of a semantic-segmentation model: per-pixel class ids.

A segmentation model takes `(batch, height, width, channels)` images and returns one
`(batch, height, width, classes)` map of class probabilities at the input size. `export`
gives it (on the TensorFlow backend):

- `serving_default`: the model's inputs, outputs `class_ids` (int32, `(batch, height,
  width)`, the argmax over classes) and `probabilities` (float32, the map);
- with `image_signature`, `serving_images`: encoded images in (`images`, `DT_STRING [-1]`),
  each decoded, stretched to the model input (bilinear) and normalised (a zoo model's
  `preprocessing` mean and std, else the `preprocessing` option), and out `class_ids`
  (int32, `(batch, image height, image width)`): the probabilities resized back to the
  image's own size (bilinear), then the argmax. The images of one request must share a
  size (a class map per image would otherwise be ragged); other sizes get INVALID_ARGUMENT.
"""

from serving import saved_model


def is_segmentation(model, task=None):
    """Whether `model` is exported as a segmentation model: `task="segmentation"` given,
    or (without `task`) the model says so with a `task` attribute."""
    if task not in (None, "classification", "segmentation"):
        raise ValueError(f"task must be 'classification' or 'segmentation', got {task!r}")
    if task is not None:
        return task == "segmentation"
    return getattr(model, "task", None) == "segmentation"


def _check_output(outputs, tf):
    if isinstance(outputs, (dict, list, tuple)):
        raise ValueError(
            "a segmentation model for export has one output, (batch, height, width, classes)"
        )
    probabilities = tf.cast(outputs, tf.float32)
    if probabilities.shape.rank != 4:
        raise ValueError(
            "a segmentation model's output must be (batch, height, width, classes), got "
            f"{probabilities.shape}"
        )
    return probabilities


def serving_function(model, tf):
    """`serving_default` of a segmentation model: its inputs in, `class_ids` and
    `probabilities` out."""

    def serve(*args):
        inputs = args[0] if len(args) == 1 else list(args)
        probabilities = _check_output(model(inputs, training=False), tf)
        return {
            "class_ids": tf.cast(tf.argmax(probabilities, axis=-1), tf.int32),
            "probabilities": probabilities,
        }

    return tf.function(serve, input_signature=saved_model._input_specs(model, tf), autograph=False)


def image_options(model, options):
    """`saved_model._image_options` for a segmentation model: a custom `decode` (which may
    crop) cannot be mapped back to the image's pixels, so it is refused; the model's own
    normalisation (a zoo model's `preprocessing` mean and std) replaces `preprocessing`
    unless that is given."""
    explicit = options if isinstance(options, dict) else {}
    if explicit.get("decode") is not None:
        raise ValueError(
            "image_signature decode is not supported for a segmentation model: the image is "
            "stretched to the model input and its class map stretched back to the image size"
        )
    checked = saved_model._image_options(model, options)
    checked["decode"] = None
    own = getattr(model, "preprocessing", None)
    if "preprocessing" not in explicit and own is not None and hasattr(own, "mean"):
        mean, std = tuple(own.mean), tuple(own.std)

        def normalise(pixels, mean=mean, std=std):
            import tensorflow as tf

            return (pixels / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)

        checked["preprocessing"] = normalise
    return checked


def image_function(model, options, tf):
    """The encoded-image signature of a segmentation model (see the module docstring)."""
    height, width, channels = options["height"], options["width"], options["channels"]
    pre = options["preprocessing"]
    pre = saved_model.PREPROCESSING[pre] if not callable(pre) else pre
    input_dtype = tf.as_dtype(model.inputs[0].dtype)

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        size = tf.shape(image)[:2]
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width), method="bilinear")
        return tf.ensure_shape(image, (height, width, channels)), size

    def serve(images):
        pixels, sizes = tf.map_fn(
            decode,
            images,
            fn_output_signature=(
                tf.TensorSpec((height, width, channels), tf.float32),
                tf.TensorSpec((2,), tf.int32),
            ),
        )
        size = sizes[0]
        check = tf.debugging.assert_equal(
            sizes,
            tf.broadcast_to(size, tf.shape(sizes)),
            message="all images of one request must have the same height and width",
        )
        with tf.control_dependencies([check]):
            probabilities = _check_output(model(tf.cast(pre(pixels), input_dtype)), tf)
        if options["softmax"]:
            probabilities = tf.nn.softmax(probabilities, axis=-1)
        resized = tf.image.resize(probabilities, size, method="bilinear")
        return {"class_ids": tf.cast(tf.argmax(resized, axis=-1), tf.int32)}

    return tf.function(
        serve, input_signature=[tf.TensorSpec((None,), tf.string, name="images")], autograph=False
    )
