"""Regenerate tests/fixtures/zoo/resnet_*.{safetensors,npz} from live timm.

How: install the oracle extra (`pip install -e .[oracle]`: torch 2.14.1, timm 1.0.29), then
run `python tools/make_resnet_fixtures.py` from the repository root. Each case in `CASES` is
a reduced-depth, reduced-width `timm.models.resnet.ResNet` (layers of 1-2 blocks, `channels`
4-32 wide) built with seed 0. Every parameter and BN statistic is randomised (`randomize`),
the model runs in eval mode on a random batch of 2 non-square images (70 x 54, odd sizes on
the way down, so padding and ceil-mode pooling matter), and the script writes

- `<id>.safetensors`: the float tensors of the timm state dict;
- `<id>.npz`: `input` (NHWC float32), `logits` (timm's output) and `config` (JSON: the zoo
  model name and the `zoo.models.build` keyword arguments of the matching Keras model).

The `nl` case inserts timm `NonLocalAttn` modules after selected blocks with
`add_after_blocks`, the layout of the zoo's `nl_resnet50`. The default test run compares the
Keras models against these files without torch (tests/zoo/test_resnet.py).
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "zoo"
INPUT_SHAPE = (2, 70, 54, 3)  # NHWC
NUM_CLASSES = 10

# id -> (zoo model, zoo body kwargs, timm ResNet kwargs, modules added after blocks)
CASES = {
    # SE-ResNeXt: plain 7x7 stem, 2 groups, a second block in stage 1 (identity shortcut)
    "resnet_se_resnext_tiny": (
        "seresnext50_32x4d",
        dict(layers=(2, 1, 1, 1), channels=(4, 8, 16, 32), cardinality=2, base_width=32),
        dict(
            block="bottleneck",
            layers=[2, 1, 1, 1],
            channels=(4, 8, 16, 32),
            cardinality=2,
            base_width=32,
            block_args=dict(attn_layer="se"),
        ),
        (),
    ),
    # ECA-ResNet-D: deep stem, average-pool shortcuts
    "resnet_eca_d_tiny": (
        "ecaresnet50d",
        dict(layers=(1, 1, 2, 1), channels=(4, 8, 16, 32), stem_width=8),
        dict(
            block="bottleneck",
            layers=[1, 1, 2, 1],
            channels=(4, 8, 16, 32),
            stem_width=8,
            stem_type="deep",
            avg_down=True,
            block_args=dict(attn_layer="eca"),
        ),
        (),
    ),
    # basic blocks, tiered stem, CBAM
    "resnet_basic_cbam_t_tiny": (
        "cbam_resnet50",
        dict(
            block="basic",
            layers=(1, 1, 1, 1),
            channels=(8, 16, 16, 32),
            stem_width=8,
            stem_type="deep_tiered",
            avg_down=True,
        ),
        dict(
            block="basic",
            layers=[1, 1, 1, 1],
            channels=(8, 16, 16, 32),
            stem_width=8,
            stem_type="deep_tiered",
            avg_down=True,
            block_args=dict(attn_layer="cbam"),
        ),
        (),
    ),
    # non-local blocks after selected blocks (the nl_resnet50 layout)
    "resnet_nl_tiny": (
        "nl_resnet50",
        dict(
            layers=(1, 2, 2, 1),
            channels=(4, 8, 16, 32),
            attention_positions=[[2, 1], [3, 0], [3, 1]],
        ),
        dict(block="bottleneck", layers=[1, 2, 2, 1], channels=(4, 8, 16, 32)),
        ((2, 1), (3, 0), (3, 1)),
    ),
    # dilated (timm output_stride): stage 3 dilated by 2, stage 4 by 4; deep stem, average-pool
    # shortcuts (timm's AvgPool2dSame in the dilated stages), two blocks in stage 3
    "resnet_eca_d_os8_tiny": (
        "ecaresnet50d",
        dict(layers=(1, 1, 2, 2), channels=(4, 8, 16, 32), stem_width=8, output_stride=8),
        dict(
            block="bottleneck",
            layers=[1, 1, 2, 2],
            channels=(4, 8, 16, 32),
            stem_width=8,
            stem_type="deep",
            avg_down=True,
            block_args=dict(attn_layer="eca"),
            output_stride=8,
        ),
        (),
    ),
    # output stride 16 with basic blocks: both 3x3 convolutions of stage 4 dilated by 2
    "resnet_basic_os16_tiny": (
        "resnet50",
        dict(block="basic", layers=(1, 1, 1, 2), channels=(8, 8, 16, 16), output_stride=16),
        dict(
            block="basic",
            layers=[1, 1, 1, 2],
            channels=(8, 8, 16, 16),
            output_stride=16,
        ),
        (),
    ),
}


def randomize(model, seed=0):
    """Randomise every float parameter and buffer in place and switch to eval mode.

    Weights with more than one axis get `N(0, 1 / fan_in)` (activations keep their scale
    through 50 layers), BN and norm scales `U[0.5, 1.5)` except the last BN of each residual
    branch (`U[0.25, 0.75)`, so the residual sum does not grow stage after stage), running
    variances `U[0.5, 1.5)`, everything else (biases, running means) `N(0, 0.1^2)`.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                value = torch.rand(tensor.shape, generator=generator) + 0.5
            elif tensor.ndim > 1:
                fan_in = tensor[0].numel()
                value = torch.randn(tensor.shape, generator=generator) * fan_in**-0.5
            elif name.endswith(("bn2.weight", "bn3.weight")):
                value = torch.rand(tensor.shape, generator=generator) * 0.5 + 0.25
            elif name.endswith("weight"):
                value = torch.rand(tensor.shape, generator=generator) + 0.5
            else:
                value = torch.randn(tensor.shape, generator=generator) * 0.1
            tensor.copy_(value)
    return model.eval()


def add_after_blocks(model, positions, make_module, attr="nl"):
    """Run `make_module(channels)` on the output of each block `(stage, index)` of a timm
    ResNet, registered as the block's attribute `attr` (state-dict keys
    `layer{stage}.{index}.{attr}.*`, the zoo's layer names)."""
    for stage, index in positions:
        block = getattr(model, f"layer{stage}")[index]
        base = type(block)

        class _WithModuleAfter(base):
            def forward(self, x, _base=base):
                return getattr(self, attr)(_base.forward(self, x))

        channels = block.conv3.out_channels if hasattr(block, "conv3") else block.conv2.out_channels
        block.add_module(attr, make_module(channels))
        block.__class__ = _WithModuleAfter
    return model


def timm_resnet(timm_kwargs, after_blocks=(), num_classes=1000):
    """A timm ResNet from `CASES`-style keyword arguments (`block` by name)."""
    from timm.layers import NonLocalAttn
    from timm.models import resnet

    kwargs = dict(timm_kwargs)
    kwargs["block"] = {"basic": resnet.BasicBlock, "bottleneck": resnet.Bottleneck}[kwargs["block"]]
    model = resnet.ResNet(num_classes=num_classes, **kwargs)
    if after_blocks:
        add_after_blocks(model, after_blocks, NonLocalAttn)
    return model


def float_state(model):
    return {
        k: v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if v.is_floating_point()
    }


def make_case(case_id, seed=0):
    import torch
    from safetensors.torch import save_file

    zoo_name, zoo_kwargs, timm_kwargs, after = CASES[case_id]
    torch.manual_seed(seed)
    model = randomize(timm_resnet(timm_kwargs, after, NUM_CLASSES), seed)
    n, h, w, c = INPUT_SHAPE
    x = torch.randn((n, c, h, w), generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        logits = model(x).numpy()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    save_file(float_state(model), str(FIXTURES / f"{case_id}.safetensors"))
    config = {"model": zoo_name, "num_classes": NUM_CLASSES, "body_kwargs": zoo_kwargs}
    import numpy as np

    np.savez_compressed(
        FIXTURES / f"{case_id}.npz",
        input=x.permute(0, 2, 3, 1).numpy().copy(),
        logits=logits,
        config=np.array(json.dumps(config)),
    )


def main(selected=None):
    for case_id in CASES:
        if selected and case_id not in selected:
            continue
        make_case(case_id)
        print("wrote", case_id)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    import timm  # noqa: F401  (before anything that may import TensorFlow)

    main(sys.argv[1:])
