"""Pretrained weights of the zoo's models (ImageNet-1k; Cityscapes for `danet_resnet50`),
from two sources, converted on load (numpy only):

- timm's checkpoints on the Hugging Face Hub, for the timm architectures, fetched with
  `huggingface_hub` (a timm user's cached file is reused);
- pytorchcv's (imgclsmob's) checkpoints on its GitHub releases, for networks timm has no
  weights for (CBAM-ResNet-50, BAM-ResNet-50); see `_PYTORCHCV_IMAGENET` below. The same
  source gives `danet_resnet50` its Cityscapes weights (`_PYTORCHCV_CITYSCAPES`).

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
    "resnet50": (
        "resnet50.a1_in1k",
        224,
        "773525d5821de224f8f30c33377b7a795d7863e08522698200d3217d3f2a41bb",
        f"top-1 80.38% / top-5 94.60% at 224 ({CARD}); 81.21% / 95.10% at 288, crop 1.0 ({CSV})",
    ),
    "seresnet50": (
        "seresnet50.a1_in1k",
        224,
        None,
        f"top-1 80.02% / top-5 94.71% at 224 ({CARD}); 81.10% / 95.12% at 288, crop 1.0 ({CSV})",
    ),
    "seresnext50_32x4d": (
        "seresnext50_32x4d.racm_in1k",
        224,
        None,
        f"top-1 81.27% / top-5 95.62% at 224 ({CARD}); 82.20% / 96.15% at 288, crop 0.95 ({CSV})",
    ),
    "ecaresnet50d": (
        "ecaresnet50d.miil_in1k",
        224,
        None,
        f"top-1 80.61% / top-5 95.32% at 224 ({CARD}); 81.65% / 95.88% at 288, crop 0.95 ({CSV})",
    ),
    "gcresnet50t": (
        "gcresnet50t.ra2_in1k",
        256,
        None,
        f"top-1 80.94% / top-5 95.45% at 256 ({CARD}); 81.46% / 95.72% at 288, crop 1.0 ({CSV})",
    ),
    "botnet26t_256": (
        "botnet26t_256.c1_in1k",
        256,
        None,
        f"top-1 79.26% / top-5 94.53% at 256, crop 0.95 ({CSV})",
    ),
    "halonet26t": (
        "halonet26t.a1h_in1k",
        256,
        None,
        f"top-1 79.11% / top-5 94.31% at 256, crop 0.95 ({CSV})",
    ),
    "lambda_resnet26t": (
        "lambda_resnet26t.c1_in1k",
        256,
        None,
        f"top-1 79.09% / top-5 94.59% at 256, crop 0.94 ({CSV})",
    ),
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
        size=(size, size),
        crop_pct=crop_pct,
        crop_mode="center",
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source=f"timm 1.0.29 pretrained_cfg of {checkpoint} (timm/models/{module})",
    )


# pytorchcv 0.0.74 (PyPI, MIT): `models/common/model_metainfos.csv` records each
# checkpoint's release tag, the SHA-1 of its `.pth` and its top-5 error (in hundredths of a
# percent, part of the file name); `models/common/model_store.py` (`get_model_file`) builds
# the URL `<repo>/releases/download/<tag>/<model>-<error>-<sha1[:8]>.pth.zip`. Top-1 / top-5
# errors: the ImageNet-1K table of the package's README (PyPI description), 1 crop at 224.
PYTORCHCV_RELEASE = "https://github.com/osmr/imgclsmob/releases/download/{tag}/{file}.zip"
# zoo model -> (pytorchcv model, release tag, sha1, top-5 error code, top-1 err %, top-5 err %)
_PYTORCHCV_IMAGENET = {
    "cbam_resnet50": (
        "cbam_resnet50",
        "v0.0.537",
        "d8cf8488efb97afecd6b3287a3ca9fa093fc3127",
        "0505",
        20.17,
        5.05,
    ),
    "bam_resnet50": (
        "bam_resnet50",
        "v0.0.499",
        "a04adf3c93f56836509f66668aa90360c9688eb8",
        "0547",
        20.91,
        5.47,
    ),
}
# Where pytorchcv's module differs from the zoo's default (timm's CbamModule): its CBAM MLP
# is nn.Linear with biases, its spatial gate stacks [max, mean], its bottleneck is C // 16.
# Its BAM (official-code layout, dilation 4, product of branches, on the input of stages
# 2-4 = the output of stages 1-3) is the zoo's default.
_PYTORCHCV_ARCHITECTURE = {
    "cbam_resnet50": {
        "attention_kwargs": {"use_bias": True, "pooling_order": "max_mean", "divisor": None}
    },
}


def pytorchcv_preprocessing(model):
    """pytorchcv's ImageNet-1K evaluation transform (imgclsmob's `imagenet1k_cls_dataset.py`:
    the shorter side resized bilinearly to `ceil(224 / 0.875)` = 256, center crop 224, the
    ImageNet mean and std; `model_metainfos.csv` records size 224 and scale 0.875)."""
    return ImagePreprocessing(
        size=(224, 224),
        crop_pct=0.875,
        crop_mode="center",
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source=f"pytorchcv 0.0.74 metainfo of {model} (img_size 224, img_scale 0.875)",
    )


def _pytorchcv_weights(name):
    model, tag, sha1, error_code, top1_error, top5_error = _PYTORCHCV_IMAGENET[name]
    file_name = f"{model}-{error_code}-{sha1[:8]}.pth"
    return WeightsSpec(
        tag="imagenet",
        url=PYTORCHCV_RELEASE.format(tag=tag, file=file_name),
        file_format="pytorchcv",
        sha256=None,
        sha1=sha1,
        input_size=(224, 224),
        num_classes=1000,
        preprocessing=pytorchcv_preprocessing(model),
        architecture=_PYTORCHCV_ARCHITECTURE.get(name, {}),
        trained_on=f"ImageNet-1k, pytorchcv {model} (imgclsmob {tag}, converted from its "
        f"Gluon model; MIT)",
        metric=f"top-1 {100 - top1_error:.2f}% / top-5 {100 - top5_error:.2f}% at 224, crop "
        f"0.875 (pytorchcv 0.0.74 README: top-1 error {top1_error}%, top-5 error "
        f"{top5_error}%)",
        source=f"pytorchcv/{model}",
    )


# pytorchcv's Cityscapes checkpoints (converted by imgclsmob from dmlc/gluon-cv's models):
# zoo model -> (pytorchcv model, release tag, sha1, mIoU code of the file name, pixel
# accuracy %, mIoU %). The metrics: the Cityscapes table of the pytorchcv 0.0.74 README
# (PyPI description), on the 500 validation images.
_PYTORCHCV_CITYSCAPES = {
    "danet_resnet50": (
        "danet_resnetd50b_cityscapes",
        "v0.0.468",
        "c5740c9fd471c141a584455efd2167858dd8cb94",
        "6799",
        95.91,
        67.99,
    ),
}
# pytorchcv's `resnetd50b(ordinary_init=False)` features: the SENet stem (3x3 convolutions
# 64, 64, 128 wide, BN + ReLU after each, 3x3 max pool), plain 1x1 strided shortcuts, the
# stride in the 3x3 convolution; `DANet` takes stage 4 at output stride 8 (stages 3 and 4
# dilated 2 and 4, their first units 1 and 2: zoo.backbones.resnet's `output_stride=8`)
PYTORCHCV_RESNETD50B = {
    "block": "bottleneck",
    "layers": (3, 4, 6, 3),
    "stem_type": "deep",
    "stem_width": 64,
}
_PYTORCHCV_ARCHITECTURE["danet_resnet50"] = {
    "backbone": PYTORCHCV_RESNETD50B,
    "branch_classifiers": True,
}
# Cityscapes' fine annotations are 1024 x 2048
CITYSCAPES_SIZE = (1024, 2048)


def pytorchcv_cityscapes_preprocessing(model):
    """pytorchcv's Cityscapes evaluation: the whole image at its own size (1024 x 2048, no
    resize or crop), scaled to [0, 1], the ImageNet mean and std. From imgclsmob's
    pytorch/dataset_utils.py (`get_test_data_source`: mode "test", commit 5f49747),
    pytorch/datasets/cityscapes_seg_dataset.py (mode "test": `_img_transform`, the array
    as loaded; commit 651da9e) and voc_seg_dataset.py (`CityscapesMetaInfo` inherits
    `voc_test_transform`: ToTensor, Normalize with the ImageNet statistics;
    `net_extra_kwargs` aux=False, fixed_size=False; commit fac9020). The zoo's
    `ResizeLike` upsamples to the input's size, as `fixed_size=False` does."""
    return ImagePreprocessing(
        size=CITYSCAPES_SIZE,
        crop_pct=1.0,
        crop_mode="squash",
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source=f"imgclsmob's Cityscapes test transform of {model} (the whole image, "
        f"ImageNet mean and std)",
    )


def _pytorchcv_cityscapes_weights(name):
    model, tag, sha1, code, pixel_accuracy, miou = _PYTORCHCV_CITYSCAPES[name]
    file_name = f"{model}-{code}-{sha1[:8]}.pth"
    return WeightsSpec(
        tag="cityscapes",
        url=PYTORCHCV_RELEASE.format(tag=tag, file=file_name),
        file_format="pytorchcv",
        sha256=None,
        sha1=sha1,
        input_size=CITYSCAPES_SIZE,
        num_classes=19,
        labels="cityscapes",
        preprocessing=pytorchcv_cityscapes_preprocessing(model),
        architecture=_PYTORCHCV_ARCHITECTURE[name],
        trained_on=f"Cityscapes fine annotations, 19 classes, pytorchcv {model} (imgclsmob "
        f"{tag}, converted from dmlc/gluon-cv's model; MIT)",
        metric=f"mIoU {miou:.2f}% / pixel accuracy {pixel_accuracy:.2f}% on the Cityscapes "
        f"validation images at 1024x2048 (pytorchcv 0.0.74 README)",
        source=f"pytorchcv/{model}",
    )


def segmentation_weights(name):
    """The registry's `WeightsSpec`s for the segmentation model `name` (empty if none)."""
    if name in _PYTORCHCV_CITYSCAPES:
        return (_pytorchcv_cityscapes_weights(name),)
    return ()


def imagenet_weights(name):
    """The registry's `WeightsSpec`s for `name` (empty if neither timm nor pytorchcv has a
    checkpoint for it)."""
    if name in _PYTORCHCV_IMAGENET:
        return (_pytorchcv_weights(name),)
    if name not in _TIMM_IMAGENET:
        return ()
    checkpoint, size, sha256, metric = _TIMM_IMAGENET[name]
    return (
        WeightsSpec(
            tag="imagenet",
            url=HUB.format(checkpoint),
            file_format="safetensors",
            sha256=sha256,
            input_size=(size, size),
            num_classes=1000,
            revision=REVISION,
            preprocessing=timm_preprocessing(checkpoint, size),
            trained_on=f"ImageNet-1k, timm recipe of {checkpoint} (Apache-2.0)",
            metric=metric,
            source=f"timm/{checkpoint}",
        ),
    )
