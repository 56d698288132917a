"""timm byob / byoa models (gcresnet50t, botnet26t_256, halonet26t, lambda_resnet26t).

Default run: reduced timm networks committed as fixtures (tools/make_byob_fixtures.py) load
into the zoo's builder, configured the same way, and reproduce timm's logits. Under the
`oracle` marker: the full models against live timm with random weights at two resolutions.
"""

import pathlib

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file

from tools.make_byob_fixtures import TINY
from zoo import models, registry
from zoo.convert.timm import load_timm_state_dict

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "zoo"
MODELS = ("gcresnet50t", "botnet26t_256", "halonet26t", "lambda_resnet26t")
MAX_RELATIVE_ERROR = 1e-4


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def build_tiny(fixture_id, size=None, **kwargs):
    name, native, classes, fields = TINY[fixture_id]
    size = size or native
    kwargs.setdefault("classifier_activation", None)
    return models.build(name, input_shape=(size, size, 3), num_classes=classes, **kwargs, **fields)


def predict(model, images):
    # one compiled call (op-by-op eager execution is slow on JAX)
    return model.predict(images, batch_size=len(images), verbose=0)


def fixture(fixture_id):
    with np.load(FIXTURES / f"{fixture_id}.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    return load_file(str(FIXTURES / f"{fixture_id}.safetensors")), arrays


# --------------------------------------------------------------------------------------
# Default run: committed reduced timm networks


@pytest.mark.parametrize("fixture_id", sorted(TINY))
def test_reduced_timm_network_logits(fixture_id):
    state, arrays = fixture(fixture_id)
    model = build_tiny(fixture_id)
    load_timm_state_dict(model, state)
    logits = predict(model, arrays["input"])
    assert relative_error(logits, arrays["logits"]) < MAX_RELATIVE_ERROR


@pytest.mark.parametrize("fixture_id", sorted(TINY))
def test_headless_model_pools_the_features_timm_classifies(fixture_id):
    state, arrays = fixture(fixture_id)
    features = build_tiny(fixture_id, include_top=False)
    pooled = build_tiny(fixture_id, include_top=False, pooling="avg")
    maxed = build_tiny(fixture_id, include_top=False, pooling="max")
    for model in (features, pooled, maxed):
        load_timm_state_dict(model, state, skip_prefixes=("head.",))
    images = arrays["input"]
    feature_map = predict(features, images)
    avg = predict(pooled, images)
    top = predict(maxed, images)
    np.testing.assert_allclose(top, feature_map.max(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(avg, feature_map.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    # timm's head: global average pool then head.fc
    logits = avg @ state["head.fc.weight"].T + state["head.fc.bias"]
    assert relative_error(logits, arrays["logits"]) < MAX_RELATIVE_ERROR


def test_checkpoint_of_another_architecture_is_refused():
    state, _ = fixture("byob_gc_tiny")
    model = build_tiny("byob_attn_tiny")
    # stem and first stage agree; stage 2's bottleneck is 24 wide there, 16 here
    with pytest.raises(
        ValueError,
        match=r"weight 'stages\.1\.0\.conv1_1x1\.conv\.weight' "
        r"has shape \(1, 1, 32, 24\)",
    ):
        load_timm_state_dict(model, state)


def linear_resize(table, rows):
    """Closed form: row j of the new table sits at position j (L - 1) / (rows - 1) of the
    old one (first and last rows kept), blended linearly from its two neighbours."""
    old = table.shape[0]
    out = np.empty((rows, table.shape[1]))
    for j in range(rows):
        position = j * (old - 1) / (rows - 1)
        i = min(int(np.floor(position)), old - 2)
        frac = position - i
        out[j] = (1 - frac) * table[i] + frac * table[i + 1]
    return out


def test_bottleneck_tables_resized_when_loaded_at_another_resolution():
    # the tiny BoT stage sees 4x4 and 2x2 maps at 64 pixels, 6x6 and 3x3 at 96
    state, _ = fixture("byob_attn_tiny")
    model = build_tiny("byob_attn_tiny", size=96)
    load_timm_state_dict(model, state)
    for block, size in (("stages-3-0", 6), ("stages-3-1", 3)):
        layer = model.get_layer(f"{block}-self_attn")
        assert layer.feat_size == (size, size)
        for table in ("height_rel", "width_rel"):
            saved = state[f"{block.replace('-', '.')}.self_attn.pos_embed.{table}"]
            assert saved.shape[0] != 2 * size - 1
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(getattr(layer, table)),
                linear_resize(saved, 2 * size - 1),
                rtol=1e-6,
                atol=1e-7,
            )
    # every other weight loads unchanged
    qkv = model.get_layer("stages-3-0-self_attn").qkv.kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(qkv),
        np.transpose(state["stages.3.0.self_attn.qkv.weight"], (2, 3, 1, 0)),
    )
    images = np.random.default_rng(0).standard_normal((1, 96, 96, 3)).astype("float32")
    assert np.all(np.isfinite(predict(model, images)))


def test_registry_entries():
    for name in MODELS:
        spec = registry.get_spec(name)
        assert (spec.family, spec.classifier_name, spec.timm_name) == ("byob", "head-fc", name)
        assert spec.default_input_shape == (256, 256, 3)
        assert spec.dynamic_size is True or name == "botnet26t_256"
    assert "relative position tables" in registry.get_spec("botnet26t_256").dynamic_size
    with pytest.raises(ValueError, match="botnet26t_256 needs a fixed height and width"):
        models.build("botnet26t_256", input_shape=(None, None, 3))


def test_layer_names_follow_timm_module_paths():
    model = build_tiny("byob_attn_tiny")
    names = {layer.name for layer in model.layers}
    for expected in (
        "stem-conv1-conv",
        "stem-conv1-bn",
        "stem-conv3-bn-act",
        "stem-pool",
        "stages-0-0-shortcut-conv",
        "stages-1-1-self_attn",
        "stages-1-1-post_attn",
        "stages-3-1-conv3_1x1-bn",
        "head-fc",
    ):
        assert expected in names


def test_halonet_needs_multiples_of_its_blocks():
    # 224 gives 14 x 14 maps in stage 3, not divisible into 8 x 8 halo blocks
    with pytest.raises(ValueError, match="HaloAttention needs height and width divisible"):
        models.build("halonet26t", input_shape=(224, 224, 3))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_mixed_bfloat16_forward(name):
    reference = models.build(name, classifier_activation=None)
    images = np.random.default_rng(0).standard_normal((1, 256, 256, 3)).astype("float32")
    expected = predict(reference, images)
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = models.build(name, classifier_activation=None)
    model.set_weights(reference.get_weights())
    assert model.get_layer("stages-3-1-conv3_1x1-conv").compute_dtype == "bfloat16"
    assert model.get_layer("stages-3-1-act").compute_dtype == "bfloat16"
    logits = predict(model, images)
    assert logits.dtype == np.float32  # the classifier computes in float32
    assert np.all(np.isfinite(logits))
    # bfloat16 keeps ~3 significant digits; random-init logits agree to a few percent
    assert relative_error(logits, expected) < 0.1


# --------------------------------------------------------------------------------------
# Oracle: the full models against live timm


def timm_parity(name, size, batch, tmp_path, timm_kwargs=None, state_fn=None):
    import timm
    import torch
    from safetensors.torch import save_file

    from tools.make_byob_fixtures import float_state, randomise

    torch.manual_seed(0)
    reference = randomise(timm.create_model(name, pretrained=False, **(timm_kwargs or {})), 0)
    state = float_state(reference)
    if state_fn is not None:
        state = state_fn(state)
        reference.load_state_dict(state, strict=False)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    images = torch.randn((batch, 3, size, size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(images).numpy()
    return expected, images.permute(0, 2, 3, 1).numpy(), path


# (model, input size, batch, timm kwargs): the pretrained size and one other
PARITY = [
    ("gcresnet50t", 256, 2, {}),
    ("gcresnet50t", 224, 2, {}),
    ("botnet26t_256", 256, 2, {}),
    ("botnet26t_256", 320, 2, {"img_size": 320}),
    ("halonet26t", 256, 2, {}),
    ("halonet26t", 512, 2, {}),
    ("lambda_resnet26t", 256, 2, {}),
    ("lambda_resnet26t", 224, 2, {}),
]


@pytest.mark.oracle
@pytest.mark.parametrize(
    "name,size,batch,timm_kwargs", PARITY, ids=[f"{p[0]}-{p[1]}" for p in PARITY]
)
def test_live_timm_parity(name, size, batch, timm_kwargs, tmp_path):
    pytest.importorskip("timm", reason="live oracle needs the `oracle` extra (timm, torch)")
    expected, images, path = timm_parity(name, size, batch, tmp_path, timm_kwargs)
    model = models.build(name, input_shape=(size, size, 3), classifier_activation=None)
    load_timm_state_dict(model, load_file(str(path)))
    logits = predict(model, images)
    error = relative_error(logits, expected)
    # Random deep ReLU networks map different images to similar logits; the difference
    # between the two images' logits checks the input-dependent part on its own scale.
    contrast = relative_error(logits[0] - logits[1], expected[0] - expected[1])
    print(
        f"{name} @ {size}: max relative logit error {error:.2e}, of the image "
        f"contrast {contrast:.2e}"
    )
    assert error < MAX_RELATIVE_ERROR
    assert contrast < 10 * MAX_RELATIVE_ERROR


@pytest.mark.oracle
def test_botnet_256_checkpoint_at_320_matches_timm_with_interpolated_tables(tmp_path):
    """A 256-pixel checkpoint loaded at 320: our converter's tables equal timm's model at
    img_size=320 given the closed-form interpolated tables."""
    pytest.importorskip("timm", reason="live oracle needs the `oracle` extra (timm, torch)")
    import timm
    import torch
    from safetensors.torch import save_file

    from tools.make_byob_fixtures import float_state, randomise

    native = float_state(randomise(timm.create_model("botnet26t_256"), 0))
    save_file(native, str(tmp_path / "native.safetensors"))

    def resized(state):
        # timm at 320 with every other weight of the 256 checkpoint
        out = dict(native)
        for key, value in native.items():
            if key.endswith(("height_rel", "width_rel")):
                rows = state[key].shape[0]
                out[key] = torch.from_numpy(linear_resize(value.numpy(), rows).astype("float32"))
        return out

    expected, images, _ = timm_parity(
        "botnet26t_256", 320, 1, tmp_path, {"img_size": 320}, state_fn=resized
    )
    model = models.build("botnet26t_256", input_shape=(320, 320, 3), classifier_activation=None)
    load_timm_state_dict(model, load_file(str(tmp_path / "native.safetensors")))
    logits = predict(model, images)
    error = relative_error(logits, expected)
    print(f"botnet26t_256 256-checkpoint @ 320: max relative logit error {error:.2e}")
    assert error < MAX_RELATIVE_ERROR
