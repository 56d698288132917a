"""Regenerate tests/fixtures/zoo/preprocessing_chelsea.npz from live timm.

How: install the oracle extra and scikit-image, then run
`python tools/make_preprocessing_fixtures.py` from the repository root. The file holds

- `jpeg`: scikit-image's `chelsea` photograph (451 x 300) encoded by Pillow as JPEG,
  quality 90 (uint8 array of the file's bytes);
- `config_<case>`: the JSON config of a `zoo.preprocessing.ImagePreprocessing`;
- `pixels_<case>`: timm 1.0.29's `create_transform` output on that JPEG for the same
  config (`input_size`, `crop_pct`, `crop_mode`, `interpolation`, `mean`, `std`), stored as
  the 8-bit pixels it normalises: `(pixels / 255 - mean) / std` in float32 gives timm's
  tensor exactly (checked here before writing), at a quarter of the size.

The default test run (tests/zoo/test_preprocessing.py) compares the zoo's Pillow and
TensorFlow preprocessing against these without torch.
"""

import io
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "tests" / "fixtures" / "zoo" / "preprocessing_chelsea.npz"
sys.path.insert(0, str(ROOT))

# case -> ImagePreprocessing config: two checkpoints' own, a non-square center crop
# (timm's ResizeKeepRatio path) and a squash
CASES = {
    "seresnet50": None,  # the registry's imagenet entry
    "lambda_resnet26t": None,
    "center_non_square": dict(
        size=(96, 128), crop_pct=0.875, crop_mode="center", interpolation="bicubic"
    ),
    "squash": dict(
        size=(72, 60),
        crop_pct=0.9,
        crop_mode="squash",
        interpolation="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
}


def main():
    # timm before TensorFlow, which zoo imports
    # isort: off
    import timm  # noqa: F401
    from timm.data import create_transform

    # isort: on
    import numpy as np
    import skimage.data
    from PIL import Image

    from zoo import registry
    from zoo.preprocessing import ImagePreprocessing

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    arrays = {"jpeg": np.frombuffer(jpeg, np.uint8)}
    for case, config in CASES.items():
        if config is None:
            preprocessing = registry.get_spec(case).weights_for("imagenet").preprocessing
        else:
            preprocessing = ImagePreprocessing(**config)
        transform = create_transform(
            input_size=(3, *preprocessing.size),
            crop_pct=preprocessing.crop_pct,
            crop_mode=preprocessing.crop_mode,
            interpolation=preprocessing.interpolation,
            mean=preprocessing.mean,
            std=preprocessing.std,
        )
        with Image.open(io.BytesIO(jpeg)) as image:
            tensor = transform(image.convert("RGB")).permute(1, 2, 0).numpy()
        mean = np.asarray(preprocessing.mean, np.float32)
        std = np.asarray(preprocessing.std, np.float32)
        pixels = np.round((tensor * std + mean) * 255.0).astype(np.uint8)
        again = (pixels.astype(np.float32) / np.float32(255.0) - mean) / std
        assert np.array_equal(again, tensor), case
        arrays[f"config_{case}"] = np.array(json.dumps(preprocessing.get_config()))
        arrays[f"pixels_{case}"] = pixels
    np.savez_compressed(OUTPUT, **arrays)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
