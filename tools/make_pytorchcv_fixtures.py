"""Regenerate tests/fixtures/zoo/pytorchcv_{cbam,bam}_tiny.{pth,npz} from live pytorchcv.

How: install the oracle extra (torch 2.14.1, pytorchcv 0.0.74), then run
`python tools/make_pytorchcv_fixtures.py` from the repository root. Each case is pytorchcv's
own `CbamResNet` / `BamResNet` class at reduced depth and width (`TINY`), built with seed 0,
every parameter and BN statistic randomised (`randomize`), its fixed 7x7 `final_pool`
replaced by a global average (what it computes on the 7x7 map of a 224 input), run in eval
mode on 2 random non-square images. It writes

- `<id>.pth`: the state dict, `torch.save` (the zip format, as a fresh pytorchcv save);
- `<id>.npz`: `input` (NHWC float32), `logits` (pytorchcv's output) and `config` (JSON: the
  zoo model and the `zoo.build` keyword arguments of the matching Keras model).

tests/zoo/test_pytorchcv_weights.py compares the Keras models against these without torch.
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


def main():
    import numpy as np
    import torch

    from zoo.registry import get_spec

    for case_id in CASES:
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


if __name__ == "__main__":
    sys.exit(main())
