"""Evaluation preprocessing of a zoo model: image file -> the tensor its weights expect.

`ImagePreprocessing` holds the facts of timm's evaluation transform (`pretrained_cfg`:
input size, `crop_pct`, `crop_mode`, interpolation, mean, std) and applies them three ways:

- `load(files)` / `transform(pil_image)`: on the host with Pillow, the way timm 1.0.29's
  `create_transform(**resolve_data_config(...))` does it (`transforms_imagenet_eval`):
  resize (the shorter side to `floor(size / crop_pct)` with the PIL filter for a square
  target; both sides for `"squash"`), center crop, scale to [0, 1], normalise. Same
  operations in float32, so the tensor equals timm's bit for bit.
- `decode_tf(encoded)`: the same steps with TensorFlow ops, for the exported SavedModel's
  image signature (decoding and resampling differ slightly from Pillow; the difference is
  measured in benchmarks/results/preprocessing_parity.md).
- `normalize(images)`: only the last step, for pixels already at the model's size (what
  `model.preprocess_input` does, as in keras.applications).

It is a plain value (`get_config` / `from_config`), stored in the config of the model that
carries it (`zoo.models.ZooModel`), so it survives `model.save()` and `load_model`.
"""

import dataclasses
import math

import numpy as np

from attention_zoo_common.checks import is_positive_int

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Pillow filters by timm's names (timm.data.transforms._str_to_pil_interpolation)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
# tf.image.resize methods of the same kernels (Pillow's filters are antialiased when
# downscaling, as tf.image.resize is with antialias=True); box and hamming have none
TF_METHODS = {
    "nearest": "nearest",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "lanczos": "lanczos3",
}
CROP_MODES = ("center", "squash")
# What the exported signature uses, chosen by benchmarks/preprocessing_parity.py: the
# antialiased kernel of the PIL filter, rounded to 8 bits after each of the two passes as
# Pillow does
DEFAULT_TF_RESIZE = "pil_like"
TF_RESIZES = ("bilinear_stretch", "plain", "antialias", "antialias_rounded", "pil_like")


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """timm's evaluation transform for one model.

    Attributes:
        size: (height, width) of the model input (the crop).
        crop_pct: the crop's share of the resized image (0 < crop_pct <= 1): the image is
            resized to `floor(size / crop_pct)` first.
        crop_mode: `"center"` (keep the aspect ratio, resize the shorter side, crop the
            middle) or `"squash"` (resize both sides, then crop).
        interpolation: the Pillow filter, by timm's name (`"bicubic"`, `"bilinear"`, ...).
        mean, std: per-channel normalisation of pixels scaled to [0, 1]; their length is
            the channel count (1: grayscale, 3: RGB).
        source: where the facts come from, in words.
    """

    size: tuple
    crop_pct: float = 1.0
    crop_mode: str = "center"
    interpolation: str = "bicubic"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    source: str = ""

    def __post_init__(self):
        size = tuple(self.size)
        if len(size) != 2 or not all(is_positive_int(d) for d in size):
            raise ValueError(
                f"size must be (height, width) of positive integers, got {self.size!r}"
            )
        if not isinstance(self.crop_pct, (int, float)) or not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(
                f"crop_mode must be one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got "
                f"{self.interpolation!r}"
            )
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) not in (1, 3) or len(std) != len(mean):
            raise ValueError(
                f"mean and std must both have 1 or 3 values, got {self.mean!r} and {self.std!r}"
            )
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        for key, value in (
            ("size", size),
            ("crop_pct", float(self.crop_pct)),
            ("mean", mean),
            ("std", std),
        ):
            object.__setattr__(self, key, value)

    @property
    def channels(self):
        return len(self.mean)

    def get_config(self):
        config = dataclasses.asdict(self)
        return {**config, "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "size": tuple(config["size"])})

    def with_size(self, size):
        """The same transform for another input size."""
        return dataclasses.replace(self, size=tuple(size))

    # --- geometry (timm.data.transforms_factory.transforms_imagenet_eval) -----------------

    @property
    def scale_size(self):
        """(height, width) the crop is taken from: `floor(size / crop_pct)`."""
        return tuple(math.floor(d / self.crop_pct) for d in self.size)

    def resized_size(self, height, width):
        """(height, width) an image of `height` x `width` is resized to before the crop."""
        target_h, target_w = self.scale_size
        if self.crop_mode == "squash":
            return target_h, target_w
        if target_h == target_w:  # torchvision Resize(int): the shorter side to the size
            if width <= height:
                return int(target_w * height / width), target_w
            return target_h, int(target_h * width / height)
        # timm ResizeKeepRatio(longest=0): the side that fits first reaches its target
        ratio = min(height / target_h, width / target_w)
        return round(height / ratio), round(width / ratio)

    def _resize_filter(self):
        # timm builds ResizeKeepRatio for a non-square center crop without passing the
        # interpolation, so it resizes bilinearly there (timm 1.0.29)
        if self.crop_mode == "center" and self.scale_size[0] != self.scale_size[1]:
            return "bilinear"
        return self.interpolation

    # --- host side (Pillow) -------------------------------------------------------------

    def transform(self, image):
        """A PIL image -> float32 array (height, width, channels), normalised."""
        from PIL import Image

        image = image.convert("L" if self.channels == 1 else "RGB")
        height, width = self.resized_size(image.height, image.width)
        if (height, width) != (image.height, image.width):
            resample = getattr(Image.Resampling, self._resize_filter().upper())
            image = image.resize((width, height), resample)
        crop_h, crop_w = self.size
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        image = image.crop((left, top, left + crop_w, top + crop_h))
        pixels = np.asarray(image, dtype=np.uint8).reshape(crop_h, crop_w, self.channels)
        return self._normalize_numpy(pixels)

    def load(self, files):
        """Image files (paths or binary file objects) -> float32 batch (n, height, width,
        channels): what the model expects."""
        from PIL import Image

        arrays = []
        for source in files:
            with Image.open(source) as image:
                arrays.append(self.transform(image))
        return np.stack(arrays) if arrays else np.zeros((0, *self.size, self.channels), np.float32)

    def _normalize_numpy(self, pixels):
        # the order and precision of torchvision's ToTensor + Normalize (float32)
        scaled = pixels.astype(np.float32) / np.float32(255.0)
        return (scaled - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def normalize(self, images):
        """Pixels in [0, 255] already at the model's size (channels last) -> normalised
        (a backend tensor, like keras.applications' `preprocess_input`)."""
        import keras

        images = keras.ops.convert_to_tensor(images, dtype="float32") / 255.0
        return (images - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    # --- in the graph (TensorFlow) ------------------------------------------------------

    def decode_tf(self, encoded, resize=DEFAULT_TF_RESIZE):
        """One encoded image (JPEG, PNG, GIF or BMP bytes; a scalar `tf.string`) -> float32
        (height, width, channels), normalised, with TensorFlow ops.

        Args:
            encoded: scalar string tensor.
            resize: how to resample (compared in benchmarks/preprocessing_parity.py):
                `"pil_like"` (default: the antialiased kernel of the PIL filter, one axis
                at a time, rounded to 8 bits after each as Pillow does),
                `"antialias_rounded"` (both axes at once, rounded once), `"antialias"`
                (no rounding), `"plain"` (tf.image.resize without antialiasing) or
                `"bilinear_stretch"` (the whole image stretched to the input size,
                bilinear: the zoo's former signature).
        """
        import tensorflow as tf

        if resize not in TF_RESIZES:
            raise ValueError(f"resize must be one of {', '.join(TF_RESIZES)}, got {resize!r}")
        method = TF_METHODS.get(self._resize_filter())
        if method is None:
            raise ValueError(
                f"interpolation {self.interpolation!r} has no TensorFlow "
                f"equivalent; the image signature supports "
                f"{', '.join(TF_METHODS)}"
            )
        channels = self.channels
        image = tf.cond(
            tf.io.is_jpeg(encoded),
            # Pillow decodes JPEG with libjpeg's accurate integer DCT
            lambda: tf.io.decode_jpeg(encoded, channels=channels, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(encoded, channels=channels, expand_animations=False),
        )
        image = tf.cast(image, tf.float32)
        crop_h, crop_w = self.size
        if resize == "bilinear_stretch":
            image = tf.image.resize(image, (crop_h, crop_w), method="bilinear")
        else:
            height, width = self._resized_size_tf(tf.shape(image)[0], tf.shape(image)[1], tf)
            image = self._resize_tf(image, height, width, method, resize, tf)
            top = tf.cast(tf.round(tf.cast(height - crop_h, tf.float64) / 2.0), tf.int32)
            left = tf.cast(tf.round(tf.cast(width - crop_w, tf.float64) / 2.0), tf.int32)
            image = image[top : top + crop_h, left : left + crop_w]
        image = tf.ensure_shape(image, (crop_h, crop_w, channels))
        scaled = image / 255.0
        return (scaled - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    def _resized_size_tf(self, height, width, tf):
        """`resized_size` on dynamic (int32) image sizes; float64 and round-half-even where
        Python's arithmetic does the same."""
        target_h, target_w = self.scale_size
        if self.crop_mode == "squash":
            return tf.constant(target_h), tf.constant(target_w)
        h64, w64 = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
        if target_h == target_w:
            size = tf.constant(target_h, tf.int64)
            # int(size * long / short) == size * long // short for these magnitudes
            new_h = tf.where(width <= height, size * h64 // w64, size)
            new_w = tf.where(width <= height, size, size * w64 // h64)
            return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)
        hf, wf = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
        ratio = tf.minimum(hf / target_h, wf / target_w)
        return (tf.cast(tf.round(hf / ratio), tf.int32), tf.cast(tf.round(wf / ratio), tf.int32))

    @staticmethod
    def _resize_tf(image, height, width, method, resize, tf):
        def to_8_bits(x):
            return tf.clip_by_value(tf.round(x), 0.0, 255.0)

        if resize == "plain":
            return tf.image.resize(image, tf.stack([height, width]), method=method)
        if resize in ("antialias", "antialias_rounded"):
            image = tf.image.resize(image, tf.stack([height, width]), method=method, antialias=True)
            return to_8_bits(image) if resize == "antialias_rounded" else image
        # Pillow: horizontal pass, then vertical, each stored as 8-bit pixels; a kernel
        # applied at scale 1 is the identity, so each call resamples one axis
        image = to_8_bits(
            tf.image.resize(
                image, tf.stack([tf.shape(image)[0], width]), method=method, antialias=True
            )
        )
        return to_8_bits(
            tf.image.resize(image, tf.stack([height, width]), method=method, antialias=True)
        )


def default_preprocessing(size, mean, std):
    """The transform of a model without timm facts: the whole image squashed to `size`
    (bilinear), normalised with the registry's mean and std."""
    return ImagePreprocessing(
        size=tuple(size),
        crop_pct=1.0,
        crop_mode="squash",
        interpolation="bilinear",
        mean=mean,
        std=std,
        source="zoo default: squash to the input size",
    )
