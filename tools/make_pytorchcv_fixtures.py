"""Regenerate tests/fixtures/zoo/pytorchcv_{cbam,bam,danet}_tiny.{pth,npz} from live pytorchcv.

How: install the oracle extra (torch 2.14.1, pytorchcv 0.0.74), then run
`python tools/make_pytorchcv_fixtures.py [case ...]` from the repository root (default:
every case). Each case is pytorchcv's
own `CbamResNet` / `BamResNet` class at reduced depth and width (`TINY`), built with seed 0,
every parameter and BN statistic randomised (`randomize`), its fixed 7x7 `final_pool`
replaced by a global average (what it computes on the 7x7 map of a 224 input), run in eval
mode on 2 random non-square images. It writes

- `<id>.pth`: the state dict, `torch.save` (the zip format, as a fresh pytorchcv save);
- `<id>.npz`: `input` (NHWC float32), `logits` (pytorchcv's output) and `config` (JSON: the
  zoo model and the `zoo.build` keyword arguments of the matching Keras model).

The DANet case (`DANET_CASE`, see `build_danet`) also stores the two branch maps
(`position`, `channel`) of pytorchcv's aux=True output.

tests/zoo/test_pytorchcv_weights.py and test_pytorchcv_danet.py compare the Keras models
against these without torch.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "zoo"
INPUT_SHAPE = (2, 70, 54, 3)  # NHWC
NUM_CLASSES = 10
# pytorchcv's units per stage and their output widths; the zoo's `channels` are the
# bottleneck widths (a quarter)
UNITS = ((32, 32), (32,), (64, 64), (64,))
TINY = dict(
    layers=tuple(len(stage) for stage in UNITS), channels=tuple(stage[0] // 4 for stage in UNITS)
)
# pytorchcv model -> (its network class, the zoo's architecture for its weights)
CASES = {
    "pytorchcv_cbam_tiny": ("cbam_resnet50", "CbamResNet"),
    "pytorchcv_bam_tiny": ("bam_resnet50", "BamResNet"),
}


def randomize(net, seed=0):
    """Every floating-point parameter and BN statistic drawn at random (weights scaled by
    their fan-in so activations stay of order one), the model in eval mode."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if not tensor.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                value = torch.rand(tensor.shape, generator=generator) + 0.5
            elif name.endswith("weight") and tensor.ndim == 1:  # BN scale
                value = torch.rand(tensor.shape, generator=generator) + 0.5
            elif name.endswith("scale.alpha"):  # DANet's attention scales (ScaleBlock)
                value = torch.rand(tensor.shape, generator=generator) + 0.5
            elif name.endswith("weight"):
                fan_in = tensor[0].numel()
                value = torch.randn(tensor.shape, generator=generator) / fan_in**0.5
            else:  # biases, running means
                value = torch.randn(tensor.shape, generator=generator) * 0.2
            tensor.copy_(value)
    return net.eval()


def build_case(case_id):
    import torch
    from pytorchcv.models import bamresnet, cbamresnet

    zoo_model, class_name = CASES[case_id]
    module = cbamresnet if class_name == "CbamResNet" else bamresnet
    torch.manual_seed(0)
    net = getattr(module, class_name)(
        channels=[list(stage) for stage in UNITS],
        init_block_channels=64,
        bottleneck=True,
        num_classes=NUM_CLASSES,
    )
    net = randomize(net)
    net.features.final_pool = torch.nn.AdaptiveAvgPool2d(1)
    return zoo_model, net


# DANet on Cityscapes: pytorchcv's own `DANet` (danet.py) on the `features` of its
# `ResNetD` (resnetd.py, `ordinary_init=False`: the SENet deep stem, `bends=(3,)`, final pool
# removed), as `danet_resnetd50b_cityscapes` builds it, at reduced depth and width; aux=True
# (main, position-branch and channel-branch maps), `fixed_size=False` (upsampled to the
# input's size, as the zoo's model does); H != W.
DANET_CASE = "pytorchcv_danet_tiny"
DANET_INPUT_SHAPE = (1, 24, 40, 3)  # NHWC: 3 x 5 maps at output stride 8
DANET_CLASSES = 19  # Cityscapes' (the registry's label set needs them)
DANET_UNITS = ((16,), (32,), (64, 64), (64, 64))
DANET_INIT_BLOCK = 8  # SEInitBlock: 3x3 convolutions 8, 8, 16 wide
DANET_TINY = {
    "backbone": {
        "block": "bottleneck",
        "layers": [len(stage) for stage in DANET_UNITS],
        "channels": [stage[0] // 4 for stage in DANET_UNITS],
        "stem_type": "deep",
        "stem_width": DANET_INIT_BLOCK,
    }
}


def build_danet(units=DANET_UNITS, init_block_channels=DANET_INIT_BLOCK, seed=0):
    """pytorchcv's DANet on a ResNetD of `units` (output widths per unit), randomised."""
    import torch
    from pytorchcv.models.danet import DANet
    from pytorchcv.models.resnetd import ResNetD

    torch.manual_seed(seed)
    backbone = ResNetD(
        channels=[list(stage) for stage in units],
        init_block_channels=init_block_channels,
        bottleneck=True,
        conv1_stride=False,
        ordinary_init=False,
        bends=(3,),
    ).features
    del backbone[-1]  # final_pool, as danet_resnetd50b_cityscapes does
    net = DANet(
        backbone=backbone,
        backbone_out_channels=units[-1][-1],
        aux=True,
        fixed_size=False,
        in_size=DANET_INPUT_SHAPE[1:3],
        num_classes=DANET_CLASSES,
    )
    return randomize(net, seed=seed)


def danet_outputs(net, x):
    """pytorchcv's (main, position, channel) maps of NHWC `x`, as NHWC arrays."""
    import torch

    with torch.no_grad():
        outputs = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    return [output.numpy().transpose(0, 2, 3, 1) for output in outputs]


def write_danet_fixture():
    import numpy as np
    import torch

    from zoo.registry import get_spec

    net = build_danet()
    x = np.random.default_rng(1).normal(size=DANET_INPUT_SHAPE).astype("float32")
    logits, position, channel = danet_outputs(net, x)
    torch.save(net.state_dict(), FIXTURES / f"{DANET_CASE}.pth")
    architecture = get_spec("danet_resnet50").weights_for("cityscapes").architecture
    config = {"model": "danet_resnet50", "kwargs": {**architecture, **DANET_TINY}}
    np.savez(
        FIXTURES / f"{DANET_CASE}.npz",
        input=x,
        logits=logits,
        position=position,
        channel=channel,
        config=np.array(json.dumps(config)),
    )
    print(f"wrote {DANET_CASE} (danet_resnet50), logits scale {np.abs(logits).max():.3g}")


def write_classification_fixture(case_id):
    import numpy as np
    import torch

    from zoo.registry import get_spec

    zoo_model, net = build_case(case_id)
    x = np.random.default_rng(1).normal(size=INPUT_SHAPE).astype("float32")
    with torch.no_grad():
        logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    torch.save(net.state_dict(), FIXTURES / f"{case_id}.pth")
    architecture = get_spec(zoo_model).weights_for("imagenet").architecture
    config = {"model": zoo_model, "kwargs": {**architecture, **TINY}}
    np.savez(
        FIXTURES / f"{case_id}.npz", input=x, logits=logits, config=np.array(json.dumps(config))
    )
    print(f"wrote {case_id} ({zoo_model}), logits scale {np.abs(logits).max():.3g}")


def main(argv=None):
    """Write the fixtures of the cases named on the command line (default: all)."""
    cases = (sys.argv[1:] if argv is None else argv) or [*CASES, DANET_CASE]
    unknown = sorted(set(cases) - {*CASES, DANET_CASE})
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {sorted({*CASES, DANET_CASE})}")
    for case_id in cases:
        if case_id == DANET_CASE:
            write_danet_fixture()
        else:
            write_classification_fixture(case_id)


if __name__ == "__main__":
    sys.exit(main())
