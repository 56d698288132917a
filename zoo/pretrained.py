"""ImageNet-1k weights of the zoo's timm architectures: timm's checkpoints on the Hugging Face
Hub, converted on load (numpy only).

Metrics are ImageNet-1k validation accuracies reported by timm: "card" = the "Model
Comparison" table of the timm model cards on huggingface.co (train size), "csv" = timm's
`results/results-imagenet.csv` (huggingface/pytorch-image-models at commit 0173a13), each
at the size and crop named. The Hub publishes a file's sha256 on its file page; only the one
found is recorded, the others load unverified (sha256 None).
"""

from zoo.registry import WeightsSpec

HUB = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
CSV = "timm results-imagenet.csv"
CARD = "timm model card"

# model name -> (timm checkpoint, train size, sha256, metric)
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


def imagenet_weights(name):
    """The registry's `WeightsSpec`s for `name` (empty if timm has no checkpoint for it)."""
    if name not in _TIMM_IMAGENET:
        return ()
    checkpoint, size, sha256, metric = _TIMM_IMAGENET[name]
    return (WeightsSpec(
        tag="imagenet", url=HUB.format(checkpoint), file_format="safetensors", sha256=sha256,
        input_size=(size, size), num_classes=1000,
        trained_on=f"ImageNet-1k, timm recipe of {checkpoint} (Apache-2.0)",
        metric=metric, source=f"timm/{checkpoint}",
    ),)
