"""ImageNet-1k weights of the zoo's timm architectures: timm's checkpoints on the Hugging Face
Hub, fetched with `huggingface_hub` (a timm user's cached file is reused) and converted on
load (numpy only).

Each entry carries timm's evaluation transform for its checkpoint (`pretrained_cfg`: input
size, `crop_pct`, `crop_mode`, interpolation, mean, std) as copied from `default_cfgs` in
timm 1.0.29 (`timm/models/resnet.py`, `byobnet.py`, `byoanet.py`; the test-size facts
`test_input_size` / `test_crop_pct` are not used); the oracle test
tests/zoo/test_preprocessing.py compares them with `timm.models.get_pretrained_cfg`.

Metrics are ImageNet-1k validation accuracies reported by timm: "card" = the "Model
Comparison" table of the timm model cards on huggingface.co (train size), "csv" = timm's
`results/results-imagenet.csv` (huggingface/pytorch-image-models at commit 0173a13), each
at the size and crop named. The Hub publishes a file's sha256 on its file page; only the one
found is recorded, the others load unverified (sha256 None).
"""

from zoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing
from zoo.registry import WeightsSpec

HUB = "hf://timm/{}/model.safetensors"
# the Hub revision every checkpoint is fetched at (the sha256, where recorded, pins content)
REVISION = "main"
CSV = "timm results-imagenet.csv"
CARD = "timm model card"

# model name -> (timm checkpoint, input size, sha256, metric)
_TIMM_IMAGENET = {
    "resnet50": ("resnet50.a1_in1k", 224,
                 "773525d5821de224f8f30c33377b7a795d7863e08522698200d3217d3f2a41bb",
                 f"top-1 80.38% / top-5 94.60% at 224 ({CARD}); 81.21% / 95.10% at 288, "
                 f"crop 1.0 ({CSV})"),
    "seresnet50": ("seresnet50.a1_in1k", 224, None,
                   f"top-1 80.02% / top-5 94.71% at 224 ({CARD}); 81.10% / 95.12% at 288, "
                   f"crop 1.0 ({CSV})"),
    "seresnext50_32x4d": ("seresnext50_32x4d.racm_in1k", 224, None,
                          f"top-1 81.27% / top-5 95.62% at 224 ({CARD}); 82.20% / 96.15% at "
                          f"288, crop 0.95 ({CSV})"),
    "ecaresnet50d": ("ecaresnet50d.miil_in1k", 224, None,
                     f"top-1 80.61% / top-5 95.32% at 224 ({CARD}); 81.65% / 95.88% at 288, "
                     f"crop 0.95 ({CSV})"),
    "gcresnet50t": ("gcresnet50t.ra2_in1k", 256, None,
                    f"top-1 80.94% / top-5 95.45% at 256 ({CARD}); 81.46% / 95.72% at 288, "
                    f"crop 1.0 ({CSV})"),
    "botnet26t_256": ("botnet26t_256.c1_in1k", 256, None,
                      f"top-1 79.26% / top-5 94.53% at 256, crop 0.95 ({CSV})"),
    "halonet26t": ("halonet26t.a1h_in1k", 256, None,
                   f"top-1 79.11% / top-5 94.31% at 256, crop 0.95 ({CSV})"),
    "lambda_resnet26t": ("lambda_resnet26t.c1_in1k", 256, None,
                         f"top-1 79.09% / top-5 94.59% at 256, crop 0.94 ({CSV})"),
}


# timm checkpoint -> (crop_pct, file of timm/models/ holding its default_cfg); every one
# uses crop_mode "center", bicubic interpolation and the ImageNet mean and std
_TIMM_EVAL_CROP = {
    "resnet50.a1_in1k": (0.95, "resnet.py"),
    "seresnet50.a1_in1k": (0.95, "resnet.py"),
    "seresnext50_32x4d.racm_in1k": (0.875, "resnet.py"),
    "ecaresnet50d.miil_in1k": (0.875, "resnet.py"),
    "gcresnet50t.ra2_in1k": (0.9, "byobnet.py"),
    "botnet26t_256.c1_in1k": (0.95, "byoanet.py"),
    "halonet26t.a1h_in1k": (0.95, "byoanet.py"),
    "lambda_resnet26t.c1_in1k": (0.94, "byoanet.py"),
}


def timm_preprocessing(checkpoint, size):
    """timm's evaluation transform of `checkpoint` at `size` x `size`."""
    crop_pct, module = _TIMM_EVAL_CROP[checkpoint]
    return ImagePreprocessing(
        size=(size, size), crop_pct=crop_pct, crop_mode="center", interpolation="bicubic",
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        source=f"timm 1.0.29 pretrained_cfg of {checkpoint} (timm/models/{module})")


def imagenet_weights(name):
    """The registry's `WeightsSpec`s for `name` (empty if timm has no checkpoint for it)."""
    if name not in _TIMM_IMAGENET:
        return ()
    checkpoint, size, sha256, metric = _TIMM_IMAGENET[name]
    return (WeightsSpec(
        tag="imagenet", url=HUB.format(checkpoint), file_format="safetensors", sha256=sha256,
        input_size=(size, size), num_classes=1000, revision=REVISION,
        preprocessing=timm_preprocessing(checkpoint, size),
        trained_on=f"ImageNet-1k, timm recipe of {checkpoint} (Apache-2.0)",
        metric=metric, source=f"timm/{checkpoint}",
    ),)
