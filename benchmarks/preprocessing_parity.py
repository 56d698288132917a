"""How far the SavedModel image signature's in-graph preprocessing is from timm's.

For every pretrained zoo model's evaluation transform (timm's `pretrained_cfg`) and every
photograph bundled with scikit-image (astronaut, chelsea, coffee, rocket), each saved as a
JPEG (quality 90) and a PNG, this compares

- timm 1.0.29's `create_transform(**resolve_data_config(pretrained_cfg=...))` on the Pillow
  image (the reference),
- the zoo's host-side `ImagePreprocessing.load` (Pillow), and
- the zoo's in-graph `ImagePreprocessing.decode_tf` with each TensorFlow resize variant,

as the largest absolute difference of the normalised tensors. The effect on a model's
output is measured with converted weights: the timm checkpoint fixture
tests/fixtures/zoo/resnet_se_resnext_tiny.safetensors (random weights, 10 classes) loaded
into the zoo's seresnext50_32x4d layout, fed the timm tensor and each in-graph tensor of
seresnext50_32x4d's transform (224, crop 0.875, bicubic).

Usage: `python benchmarks/preprocessing_parity.py` (needs the oracle extra and
scikit-image). Writes benchmarks/results/preprocessing_parity.md and .json.
"""

import io
import json
import os
import pathlib
import platform
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# timm before TensorFlow, or the process dies (ARCHITECTURE.md)
# isort: off
import timm  # noqa: E402
import torch  # noqa: E402, F401
from timm.data import create_transform, resolve_data_config  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
# isort: on

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.preprocessing import TF_RESIZES  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
FORMATS = {"JPEG": dict(quality=90), "PNG": {}}
FIXTURE = ROOT / "tests" / "fixtures" / "zoo" / "resnet_se_resnext_tiny"
LOGIT_MODEL = "seresnext50_32x4d"


def photo_files():
    """{(photo, format): encoded bytes} of scikit-image's bundled photographs."""
    import skimage.data

    files = {}
    for name in PHOTOS:
        pixels = getattr(skimage.data, name)()
        for fmt, options in FORMATS.items():
            buffer = io.BytesIO()
            Image.fromarray(pixels).convert("RGB").save(buffer, format=fmt, **options)
            files[(name, fmt)] = buffer.getvalue()
    return files


def timm_tensor(checkpoint, data):
    pretrained_cfg = timm.models.get_pretrained_cfg(checkpoint).to_dict()
    config = resolve_data_config(pretrained_cfg=pretrained_cfg)
    with Image.open(io.BytesIO(data)) as image:
        return create_transform(**config)(image.convert("RGB")).permute(1, 2, 0).numpy()


def in_graph(preprocessing, resize):
    return tf.function(
        lambda encoded: preprocessing.decode_tf(encoded, resize=resize),
        input_signature=[tf.TensorSpec((), tf.string)],
    )


def main():
    files = photo_files()
    transforms = {}
    for name, spec in registry.all_specs().items():
        entry = spec.weights_for("imagenet")
        if entry is not None and entry.preprocessing is not None:
            transforms[name] = (entry.source.removeprefix("timm/"), entry.preprocessing)
    tensor_rows = {
        variant: {"max_abs": 0.0, "mean_abs": [], "share_differing": []}
        for variant in ("host",) + TF_RESIZES
    }
    per_format = {variant: dict.fromkeys(FORMATS, 0.0) for variant in TF_RESIZES}
    references = {}
    for name, (checkpoint, preprocessing) in transforms.items():
        functions = {resize: in_graph(preprocessing, resize) for resize in TF_RESIZES}
        for key, data in files.items():
            reference = timm_tensor(checkpoint, data)
            references[(name, key)] = reference
            candidates = {"host": preprocessing.load([io.BytesIO(data)])[0]}
            candidates.update(
                {resize: fn(tf.constant(data)).numpy() for resize, fn in functions.items()}
            )
            for variant, tensor in candidates.items():
                difference = np.abs(tensor - reference)
                row = tensor_rows[variant]
                row["max_abs"] = max(row["max_abs"], float(difference.max()))
                row["mean_abs"].append(float(difference.mean()))
                row["share_differing"].append(float((difference > 1e-6).mean()))
                if variant in per_format:
                    per_format[variant][key[1]] = max(
                        per_format[variant][key[1]], float(difference.max())
                    )
    for row in tensor_rows.values():
        row["mean_abs"] = float(np.mean(row["mean_abs"]))
        row["share_differing"] = float(np.mean(row["share_differing"]))

    config = json.loads(str(np.load(f"{FIXTURE}.npz")["config"]))
    model = zoo.load(
        LOGIT_MODEL,
        weights=f"{FIXTURE}.safetensors",
        input_shape=(224, 224, 3),
        classifier_activation=None,
        **config["body_kwargs"],
    )
    preprocessing = transforms[LOGIT_MODEL][1]
    reference_batch = np.stack([references[(LOGIT_MODEL, key)] for key in files])
    reference_logits = model.predict(reference_batch, verbose=0)
    scale = float(np.abs(reference_logits).max())
    logit_rows = {}
    for resize in TF_RESIZES:
        fn = in_graph(preprocessing, resize)
        batch = np.stack([fn(tf.constant(data)).numpy() for data in files.values()])
        logits = model.predict(batch, verbose=0)
        logit_rows[resize] = {
            "max_abs": float(np.abs(logits - reference_logits).max()),
            "relative": float(np.abs(logits - reference_logits).max() / scale),
            "top1_agree": int((logits.argmax(-1) == reference_logits.argmax(-1)).sum()),
        }
    chosen = min(TF_RESIZES, key=lambda r: (tensor_rows[r]["max_abs"], tensor_rows[r]["mean_abs"]))
    result = dict(
        machine=platform.processor() or platform.machine(),
        tensorflow=tf.__version__,
        timm=timm.__version__,
        pillow=Image.__version__,
        photos=list(PHOTOS),
        formats=list(FORMATS),
        models=sorted(transforms),
        tensors=tensor_rows,
        tensors_by_format=per_format,
        logits=logit_rows,
        logit_scale=scale,
        logit_model=LOGIT_MODEL,
        chosen=chosen,
        images=len(files),
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "preprocessing_parity.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "preprocessing_parity.md").write_text(render(result))
    print(render(result))


DESCRIPTIONS = {
    "host": "Pillow on the host (`ImagePreprocessing.load`: CLI `predict`, Python)",
    "pil_like": "antialiased kernel, one axis at a time, 8-bit rounding after each (as Pillow)",
    "antialias_rounded": "`tf.image.resize(..., antialias=True)`, rounded to 8 bits",
    "antialias": "`tf.image.resize(..., antialias=True)`, float",
    "plain": "`tf.image.resize` without antialiasing",
    "bilinear_stretch": "whole image stretched to the input size, bilinear (the former signature)",
}


def render(result):
    lines = [
        "# In-graph preprocessing against timm's evaluation transform",
        "",
        f"timm {result['timm']} `create_transform(**resolve_data_config(pretrained_cfg))` on "
        f"Pillow {result['pillow']} images is the reference; TensorFlow {result['tensorflow']}. "
        f"{result['images']} image files ({', '.join(result['photos'])} from scikit-image, "
        f"each as JPEG quality 90 and PNG) x {len(result['models'])} checkpoint transforms "
        f"({', '.join(result['models'])}). Tensors are normalised (one 8-bit level = "
        f"1/255/std, about 0.0175). Generated by `benchmarks/preprocessing_parity.py`.",
        "",
        "| preprocessing | max abs diff | mean abs diff | values differing | max, JPEG "
        "| max, PNG |",
        "|---|---|---|---|---|---|",
    ]
    for variant, row in result["tensors"].items():
        by_format = result["tensors_by_format"].get(variant, {})
        jpeg, png = (by_format.get(fmt, row["max_abs"]) for fmt in ("JPEG", "PNG"))
        lines.append(
            f"| {DESCRIPTIONS[variant]} | {row['max_abs']:.3g} | {row['mean_abs']:.3g} | "
            f"{100 * row['share_differing']:.3g}% | {jpeg:.3g} | {png:.3g} |"
        )
    lines += [
        "",
        f"Effect on logits: {result['logit_model']} with converted weights (the timm fixture "
        f"checkpoint tests/fixtures/zoo/resnet_se_resnext_tiny.safetensors, random weights, "
        f"10 classes) at 224 x 224; largest |logit| on the timm tensors "
        f"{result['logit_scale']:.3g}.",
        "",
        "| in-graph resize | max abs logit diff | relative to the largest logit | same top-1 |",
        "|---|---|---|---|",
    ]
    for variant, row in result["logits"].items():
        lines.append(
            f"| {DESCRIPTIONS[variant]} | {row['max_abs']:.3g} | {row['relative']:.3g} | "
            f"{row['top1_agree']} of {result['images']} |"
        )
    lines += [
        "",
        f"The exported image signature uses `{result['chosen']}` (the smallest largest "
        f"difference); `ImagePreprocessing.decode_tf` decodes JPEG with the accurate integer "
        f"DCT, as Pillow does. The host side equals timm's tensor exactly. In the graph, "
        f"{100 * result['tensors'][result['chosen']]['share_differing']:.2g}% of the values "
        f"differ from timm's, by at most "
        f"{result['tensors'][result['chosen']]['max_abs']:.3g}: single 8-bit rounding flips "
        f"(Pillow's fixed-point resampling coefficients against TensorFlow's float ones).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
