"""Regenerate tests/fixtures/zoo/byob_*.{safetensors,npz}: reduced timm byob / byoa networks.

How: with the oracle extra installed (torch 2.14.1, timm 1.0.29), run
`python tools/make_byob_fixtures.py` from the repository root. For each entry of `TINY`
(below), timm's `ByobNet(ByoModelCfg(...), num_classes, img_size)` is built from the same
configuration the zoo's builder takes (zoo/backbones/byob.py mirrors timm's field names),
every parameter and BN statistic is randomised with `randomise(model, seed=0)`, and the
script stores

- `<id>.safetensors`: timm's state dict (float tensors), what `zoo.load(weights=...)` reads;
- `<id>.npz`: `input` (NHWC float32 images) and `logits` (timm's output).

The configurations are ResNet-T networks with one or two blocks per stage and small widths,
covering both naming schemes of the zoo's byob models: bottleneck blocks with additive
Global Context attention (`gcresnet50t`'s scheme, no stem pool, grouped 3x3) and
self-attention blocks with HaloAttn, LambdaLayer and BottleneckAttn (strided and not),
interleaved with bottleneck blocks after a max-pooled stem (`botnet26t` / `halonet26t` /
`lambda_resnet26t`).
"""

import dataclasses
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:  # timm / torch before TensorFlow (see ARCHITECTURE.md); absent in the default run
    import timm  # noqa: F401
    import torch  # noqa: F401
except ImportError:
    pass

import numpy as np  # noqa: E402

from zoo.backbones.byob import ByoBlockCfg, interleave_blocks  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "zoo"

# id -> (registered model the zoo builds it as, input size, classes, ByoModelCfg fields)
TINY = {
    "byob_gc_tiny": (
        "gcresnet50t",
        48,
        10,
        dict(
            blocks=(
                ByoBlockCfg(type="bottle", d=1, c=32, s=1, br=0.25),
                ByoBlockCfg(type="bottle", d=2, c=48, s=2, gs=8, br=0.5),
                ByoBlockCfg(type="bottle", d=1, c=64, s=2, br=0.25),
                ByoBlockCfg(type="bottle", d=1, c=64, s=2, br=0.25),
            ),
            stem_chs=16,
            stem_type="tiered",
            stem_pool="",
            attn_layer="gca",
        ),
    ),
    "byob_attn_tiny": (
        "botnet26t_256",
        64,
        10,
        dict(
            blocks=(
                ByoBlockCfg(type="bottle", d=1, c=32, s=1, gs=0, br=0.25),
                interleave_blocks(
                    types=("bottle", "self_attn"),
                    d=2,
                    c=64,
                    s=2,
                    gs=0,
                    br=0.25,
                    self_attn_layer="halo",
                    self_attn_kwargs=dict(block_size=4, halo_size=1, num_heads=4),
                ),
                ByoBlockCfg(
                    type="self_attn",
                    d=1,
                    c=64,
                    s=2,
                    gs=0,
                    br=0.5,
                    self_attn_layer="lambda",
                    self_attn_kwargs=dict(r=5, num_heads=4, dim_head=8),
                ),
                ByoBlockCfg(type="self_attn", d=2, c=96, s=2, gs=0, br=0.25),
            ),
            stem_chs=16,
            stem_type="tiered",
            stem_pool="maxpool",
            self_attn_layer="bottleneck",
            self_attn_kwargs=dict(),
        ),
    ),
}


def timm_cfg(fields):
    """timm's `ByoModelCfg` for the zoo configuration fields `fields` (same names)."""
    from timm.models import byobnet

    def block(cfg):
        return byobnet.ByoBlockCfg(**dataclasses.asdict(cfg))

    blocks = tuple(
        tuple(block(b) for b in stage) if isinstance(stage, tuple) else block(stage)
        for stage in fields["blocks"]
    )
    return byobnet.ByoModelCfg(**dict(fields, blocks=blocks))


def randomise(model, seed):
    """Random parameters and buffers for a timm network, scaled so that activations stay
    O(1) through ~20 residual blocks: weights (2+ dims) `N(0, 1 / fan_in)`, norm scales
    `U[0.5, 1.5)`, biases / means `N(0, 0.1^2)`, running variances `U[0.5, 1.5)`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            shape = tensor.shape
            if name.endswith("running_var") or (tensor.ndim == 1 and name.endswith("weight")):
                value = torch.rand(shape, generator=generator) + 0.5
            elif tensor.ndim == 1:
                value = torch.randn(shape, generator=generator) * 0.1
            else:
                fan_in = int(np.prod(shape[1:]))
                value = torch.randn(shape, generator=generator) * fan_in**-0.5
            tensor.copy_(value)
    return model.eval()


def timm_tiny(fixture_id, seed=0):
    """The randomised timm network of `TINY[fixture_id]`."""
    from timm.models.byobnet import ByobNet

    _, size, classes, fields = TINY[fixture_id]
    torch.manual_seed(seed)
    return randomise(ByobNet(timm_cfg(fields), num_classes=classes, img_size=size), seed)


def float_state(model):
    return {
        k: v.detach().contiguous() for k, v in model.state_dict().items() if v.is_floating_point()
    }


def main(selected=None):
    from safetensors.torch import save_file

    FIXTURES.mkdir(parents=True, exist_ok=True)
    for fixture_id, (_, size, _, _) in TINY.items():
        if selected and fixture_id not in selected:
            continue
        model = timm_tiny(fixture_id)
        images = torch.randn((2, 3, size, size), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits = model(images)
        save_file(float_state(model), str(FIXTURES / f"{fixture_id}.safetensors"))
        np.savez_compressed(
            FIXTURES / f"{fixture_id}.npz",
            input=images.permute(0, 2, 3, 1).numpy(),
            logits=logits.numpy(),
        )
        print("wrote", fixture_id)


if __name__ == "__main__":
    main(sys.argv[1:])
