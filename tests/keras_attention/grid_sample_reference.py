"""Parity of `AffineGrid` + `BilinearSampler` with torch `F.affine_grid` + `F.grid_sample`
(bilinear, zeros padding), values and gradients w.r.t. the image and theta.

One definition used three ways, like tests/oracle_cases.py: `tools/make_grid_sample_fixtures.py`
runs torch once and stores `tests/fixtures/grid_sample/<id>.npz`; the default tests compare
against those; tests marked `oracle` run torch live. The loss is `sum(output * projection)`
with the projection the shared harness uses (`np.random.default_rng(123)` over the NHWC
output shape), so `tests.layer_harness.loss_and_gradients` gives our side on any backend.
"""

import dataclasses
import pathlib

import keras
import numpy as np

from keras_attention import layers as L

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "grid_sample"
RTOL = 1e-5


@dataclasses.dataclass
class GridSampleCase:
    id: str
    input_shape: tuple  # NHWC
    output_size: tuple  # (H_out, W_out)
    align_corners: bool
    theta_noise: float = 0.4  # std of theta - identity; > 0 puts samples off the image too


CASES = [
    GridSampleCase("same_size_align_corners", (2, 5, 7, 3), (5, 7), True),
    GridSampleCase("same_size_half_pixel", (2, 5, 7, 3), (5, 7), False),
    GridSampleCase("upsample_align_corners", (2, 6, 5, 2), (9, 8), True, 0.6),
    GridSampleCase("downsample_half_pixel", (3, 9, 8, 2), (4, 6), False, 0.6),
]


def make_inputs(case, seed):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=case.input_shape).astype("float32")
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    theta = identity + case.theta_noise * rng.normal(size=(case.input_shape[0], 2, 3))
    return images, theta.astype("float32")


def projection(case):
    shape = (case.input_shape[0], *case.output_size, case.input_shape[-1])
    return np.random.default_rng(123).normal(size=shape).astype("float32")


def torch_run(case, seed=0):
    """torch reference: output and gradients of sum(output * projection), NHWC."""
    import torch
    import torch.nn.functional as F

    images, theta = make_inputs(case, seed)
    x = torch.tensor(images.transpose(0, 3, 1, 2), requires_grad=True)
    t = torch.tensor(theta, requires_grad=True)
    n, c = x.shape[:2]
    grid = F.affine_grid(t, (n, c, *case.output_size), align_corners=case.align_corners)
    y = F.grid_sample(
        x, grid, mode="bilinear", padding_mode="zeros", align_corners=case.align_corners
    )
    (y * torch.from_numpy(projection(case).transpose(0, 3, 1, 2))).sum().backward()
    return {
        "images": images,
        "theta": theta,
        "output": y.detach().permute(0, 2, 3, 1).numpy().copy(),
        "grad_images": x.grad.permute(0, 2, 3, 1).numpy().copy(),
        "grad_theta": t.grad.numpy().copy(),
    }


def save_fixture(case, data):
    FIXTURES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURES / f"{case.id}.npz", **data)


def load_fixture(case):
    with np.load(FIXTURES / f"{case.id}.npz") as npz:
        return {k: npz[k] for k in npz.files}


class AffineSampling(keras.layers.Layer):
    """`BilinearSampler()([images, AffineGrid(output_size)(theta)])` as one layer, so the
    harness' per-backend gradient helper differentiates it w.r.t. both inputs."""

    def __init__(self, output_size, align_corners, **kwargs):
        super().__init__(**kwargs)
        self.grid = L.AffineGrid(output_size, align_corners=align_corners)
        self.sampler = L.BilinearSampler(align_corners=align_corners)

    def call(self, inputs, training=None):
        images, theta = inputs
        return self.sampler([images, self.grid(theta)])


def assert_matches(case, data):
    from tests.layer_harness import loss_and_gradients

    layer = AffineSampling(case.output_size, case.align_corners)
    output, _, (grad_images, grad_theta) = loss_and_gradients(
        layer, [data["images"], data["theta"]]
    )
    for name, ours in (
        ("output", output),
        ("grad_images", grad_images),
        ("grad_theta", grad_theta),
    ):
        reference = data[name]
        scale = np.max(np.abs(reference))
        np.testing.assert_allclose(
            ours, reference, rtol=RTOL, atol=RTOL * scale, err_msg=f"{case.id}: {name}"
        )
