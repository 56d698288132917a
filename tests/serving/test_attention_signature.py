"""The attention signatures (`serving.attention`): the maps served over REST and gRPC equal
`keras_attention.attention_map` in process, laid out and resized by the closed forms below,
within the stated quantisation error (`scale / 2`)."""

import io

import keras
import numpy as np
import pytest

import keras_attention
from keras_attention import layers as L
from serving import Client, ServingError
from serving.saved_model import export

HEIGHT, WIDTH = 12, 10  # H != W
LAYERS = ("stn", "cbam", "se", "non-local.1")
# graph (served) against eager (in process) float32 arithmetic
ATOL = 1e-5
SMALL = (5, 7)  # a common grid other than the input's: CBAM's map shrinks, non-local's grows


def attention_model():
    """A tiny classifier with a spatial transformer, CBAM, SE and a subsampled non-local
    block (its keys on a 3 x 2 grid, resized to the 12 x 10 input); all weights random."""
    inputs = keras.Input((HEIGHT, WIDTH, 3), name="image")
    x = L.SpatialTransformer(name="stn")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    x = L.CBAM(reduction_ratio=0.5, name="cbam")(x)
    x = L.SqueezeExcite(reduction_ratio=0.5, name="se")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = L.NonLocal(subsample=True, name="non-local.1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="head")(x))
    rng = np.random.default_rng(0)
    for variable in model.weights:  # the STN's localisation head starts as the identity
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(variable.dtype))
    return model


def resize_bilinear(maps, size):
    """(B, h, w) -> (B, *size): bilinear with half-pixel centres, edges clamped (the closed
    form of `tf.image.resize(method="bilinear")` without antialiasing)."""

    def axis(n_in, n_out):
        source = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, None)
        low = np.minimum(np.floor(source).astype(int), n_in - 1)
        return low, np.minimum(low + 1, n_in - 1), source - low

    y0, y1, fy = axis(maps.shape[1], size[0])
    x0, x1, fx = axis(maps.shape[2], size[1])
    rows = maps[:, y0] * (1 - fy)[None, :, None] + maps[:, y1] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def footprint(grid, height, width):
    """Total bilinear weight with which `grid_sample(align_corners=False)` reads each input
    pixel: the transpose of bilinear sampling applied to ones."""
    out = np.zeros((grid.shape[0], height, width))
    x = ((grid[..., 0].astype(np.float64) + 1) * width - 1) / 2
    y = ((grid[..., 1].astype(np.float64) + 1) * height - 1) / 2
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    batch = np.broadcast_to(np.arange(grid.shape[0])[:, None, None], x.shape)
    for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            np.add.at(out, (batch[inside], yi[inside], xi[inside]), (wy * wx)[inside])
    return out


def expected_maps(model, inputs, size=(HEIGHT, WIDTH)):
    """{output key: float map} from `keras_attention.attention_map`, laid out as documented
    on the common grid `size`."""
    maps = {name: keras_attention.attention_map(model, name, inputs) for name in LAYERS}
    nonlocal_keys = maps["non-local.1"].mean(axis=1).reshape(-1, 3, 2)  # (B, 30, 6) -> keys
    return {
        "attention/stn": resize_bilinear(footprint(maps["stn"], HEIGHT, WIDTH), size),
        "attention/cbam": resize_bilinear(maps["cbam"][..., 0], size),
        "attention/se": maps["se"][:, 0, 0, :],
        "attention/non-local.1": resize_bilinear(nonlocal_keys, size),
    }


def png(array):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(pngs):
    """What the image signature feeds the model: pixels stretched to the input size, / 255."""
    import tensorflow as tf
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(io.BytesIO(p)), np.float32) for p in pngs])
    return tf.image.resize(pixels, (HEIGHT, WIDTH), method="bilinear").numpy() / 255.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tensorflow_serving.config import model_server_config_pb2

    from serving.server import Server

    keras.utils.set_random_seed(0)
    model = attention_model()
    base = tmp_path_factory.mktemp("attention_models")
    export(model, base, "att", version=1, attention_signature=True, image_signature=True)
    export(
        model,
        base,
        "att16",
        version=1,
        attention_signature=dict(layers=["cbam", "non-local.1"], dtype="float16", size=SMALL),
        # replayed before the version loads: a broken attention signature fails the load
        warmup_requests=[
            {"signature_name": "attention", "inputs": {"image": np.zeros((1, HEIGHT, WIDTH, 3))}}
        ],
    )
    export(model, base, "plain", version=1)
    config = model_server_config_pb2.ModelServerConfig()
    for name in ("att", "att16", "plain"):
        config.model_config_list.config.add(
            name=name, base_path=str(base / name), model_platform="tensorflow"
        )
    with Server(config, rest_api_port=0, port=0, host="127.0.0.1", poll_wait_seconds=0) as server:
        yield server, model


def client(server, protocol):
    port = server.rest_api_port if protocol == "rest" else server.port
    return Client(**{protocol: f"127.0.0.1:{port}"}, timeout=30)


def assert_maps_match(got, want):
    for key, value in want.items():
        quantisation = (
            0.5
            * (
                value.max(axis=tuple(range(1, value.ndim)))
                - value.min(axis=tuple(range(1, value.ndim)))
            )
            / 255.0
        )
        error = np.abs(got[key] - value).max(axis=tuple(range(1, value.ndim)))
        assert got[key].dtype == np.float32 and got[key].shape == value.shape, key
        assert (error <= quantisation + ATOL).all(), (key, error, quantisation)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_served_maps_equal_attention_map(served, protocol):
    server, model = served
    inputs = np.random.default_rng(1).uniform(0, 1, (3, HEIGHT, WIDTH, 3)).astype("float32")
    want = expected_maps(model, inputs)
    with client(server, protocol) as c:
        got = c.predict("att", inputs, signature_name="attention")
        raw = c.predict("att", inputs, signature_name="attention", dequantize=False)
    assert set(got) == {"output_0", *want}
    np.testing.assert_allclose(got["output_0"], model.predict(inputs, verbose=0), atol=1e-6)
    assert_maps_match(got, want)
    # on the wire: uint8 maps, one float32 scale and offset per sample, spanning 0..255
    for key in want:
        assert raw[key].dtype == np.uint8 and raw[key].min() == 0 and raw[key].max() == 255
        assert raw[key + "/scale"].shape == raw[key + "/offset"].shape == (3,)
    # the spatial transformer of random weights reads part of the image only
    assert (want["attention/stn"] == 0).any() and want["attention/stn"].max() > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_image_attention_signature(served, protocol):
    server, model = served
    rng = np.random.default_rng(2)
    pngs = [png(rng.integers(0, 256, (15, 11, 3), dtype=np.uint8)) for _ in range(2)]
    inputs = decoded(pngs)
    with client(server, protocol) as c:
        got = c.predict("att", pngs, signature_name="serving_images_attention")
    want = expected_maps(model, inputs)
    assert set(got) == {"probabilities", "classes", "scores", *want}
    np.testing.assert_allclose(got["probabilities"], model.predict(inputs, verbose=0), atol=1e-5)
    assert_maps_match(got, want)


@pytest.mark.slow
def test_float16_maps_over_grpc_and_rest_refuses_them(served):
    server, model = served
    inputs = np.random.default_rng(3).uniform(0, 1, (2, HEIGHT, WIDTH, 3)).astype("float32")
    want = expected_maps(model, inputs, SMALL)
    with client(server, "grpc") as c:
        got = c.predict("att16", inputs, signature_name="attention")
    assert set(got) == {"output_0", "attention/cbam", "attention/non-local.1"}
    for key in ("attention/cbam", "attention/non-local.1"):
        assert got[key].dtype == np.float16 and got[key].shape == (2, *SMALL)
        np.testing.assert_allclose(got[key], want[key], rtol=2**-11, atol=ATOL)
    # TF Serving's JSON writer has no float16 (util/json_tensor.cc): 400, as the real server
    with client(server, "rest") as c, pytest.raises(ServingError) as info:
        c.predict("att16", inputs, signature_name="attention")
    assert info.value.http_status == 400
    assert info.value.message == "Failed to write JSON value for tensor type: half"


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_export_without_the_option_has_no_attention_signature(served, protocol):
    server, _ = served
    with client(server, protocol) as c:
        plain = c.metadata("plain")["metadata"]["signature_def"]["signature_def"]
        full = c.metadata("att")["metadata"]["signature_def"]["signature_def"]
    assert set(plain) - {"__saved_model_init_op"} == {"serving_default"}
    assert set(full) - {"__saved_model_init_op"} == {
        "serving_default",
        "serving_images",
        "attention",
        "serving_images_attention",
    }
    outputs = full["attention"]["outputs"]
    assert outputs["attention/cbam"]["dtype"] == "DT_UINT8"
    assert outputs["attention/cbam/scale"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in outputs["attention/cbam"]["tensor_shape"]["dim"]] == [
        "-1",
        str(HEIGHT),
        str(WIDTH),
    ]
    for signature in ("attention", "serving_default"):  # the same inputs (tensor names differ)
        full[signature]["inputs"]["image"].pop("name")
    assert full["attention"]["inputs"] == full["serving_default"]["inputs"]


def test_bad_layer_names_fail_at_export(tmp_path):
    model = attention_model()
    with pytest.raises(ValueError, match=r"layer 'nope': no such layer of model"):
        export(model, tmp_path, "m", attention_signature=["cbam", "nope"])
    with pytest.raises(ValueError, match=r"layer 'conv': not an attention layer"):
        export(model, tmp_path, "m", attention_signature=["conv"])
    with pytest.raises(ValueError, match=r"unknown attention_signature options \['size_'\]"):
        export(model, tmp_path, "m", attention_signature=dict(size_=(4, 4)))
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        export(model, tmp_path, "m", attention_signature=dict(dtype="int8"))
    inputs = keras.Input((8, 8, 3))
    without = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs), name="no_attention")
    with pytest.raises(ValueError, match="model 'no_attention' has no attention layer"):
        export(without, tmp_path, "m", attention_signature=True)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_layers_without_a_layout_are_left_out_or_rejected(tmp_path):
    """Halo attention's blocked map has no picture: `True` leaves it out with a warning,
    naming it fails (before anything is written)."""
    from serving.attention import attention_options

    inputs = keras.Input((8, 8, 16))
    x = L.HaloAttention(block_size=4, halo_size=1, num_heads=2, dim_head=6, name="halo")(inputs)
    x = L.SpatialGate(name="gate")(x)
    model = keras.Model(inputs, x)
    with pytest.warns(UserWarning, match=r"layer 'halo' \(HaloAttention\) has shape"):
        options = attention_options(model, True)
    assert [(plan.key, plan.kind, plan.grid) for plan in options["plans"]] == [
        ("attention/gate", "spatial", (8, 8))
    ]
    with pytest.raises(ValueError, match=r"layer 'halo' \(HaloAttention\) has shape"):
        export(model, tmp_path, "m", attention_signature=["halo"])


# blocked halo windows; CGNL's single (batch, 1, 1) weight
NO_LAYOUT = {"HaloAttention", "CompactGeneralizedNonLocal"}


def every_layer_case():
    from tests.keras_attention import all_harness_cases

    seen = set()
    for case in all_harness_cases():
        if case.attention_shape is None or case.cls in seen:
            continue
        seen.add(case.cls)
        yield pytest.param(case, id=case.cls.__name__)


@pytest.mark.parametrize("case", every_layer_case())
def test_every_layer_gets_a_layout_or_a_reason(case):
    """Each attention layer of the library (its first harness case) gets a picture of the
    documented shape, computed in TensorFlow as the signature does, except those of
    `NO_LAYOUT`, which are refused with a ValueError naming them."""
    import tensorflow as tf

    from serving.attention import _TappedModel, attention_options

    shapes = case.input_shape if isinstance(case.input_shape, list) else [case.input_shape]
    inputs = [keras.Input(shape[1:], batch_size=shape[0]) for shape in shapes]
    layer = case.build_layer(name="layer")
    model = keras.Model(inputs, layer(inputs if len(inputs) > 1 else inputs[0]))
    if case.cls.__name__ in NO_LAYOUT:
        with pytest.raises(ValueError, match=r"layer 'layer' \(\w+\) has shape .* no spatial"):
            attention_options(model, dict(layers=["layer"], size=(3, 4)))
        return
    options = attention_options(model, dict(layers=["layer"], size=(3, 4)))
    (plan,) = options["plans"]
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(0, 1, shape).astype("float32") for shape in shapes]
    if case.cls.__name__ in ("HardCrop", "GlimpseSensor"):  # integer corners / locations
        arrays[1] = np.zeros(shapes[1], "float32")
    tapped = _TappedModel(model, options)
    tapped([tf.constant(a) for a in arrays] if len(arrays) > 1 else tf.constant(arrays[0]))
    picture = tapped.maps["attention/layer"]
    batch = shapes[0][0]
    if plan.kind == "channel":
        assert picture.shape == (batch, plan.grid[0])
    else:
        assert picture.shape == (batch, 3, 4)
    assert picture.dtype == tf.uint8
    assert tapped.maps["attention/layer/scale"].shape == (batch,)


def test_dequantize_attention_closed_form():
    from serving.client import dequantize_attention

    quantised = np.array([[[0, 255], [128, 3]], [[7, 7], [7, 7]]], np.uint8)
    outputs = {
        "output_0": np.ones((2, 3), np.float32),
        "attention/a": quantised,
        "attention/a/scale": np.array([0.5, 0.0], np.float32),
        "attention/a/offset": np.array([-1.0, 2.0], np.float32),
        "attention/b": np.full((2, 4), 0.25, np.float16),  # float16: as it is
    }
    got = dequantize_attention(outputs)
    assert sorted(got) == ["attention/a", "attention/b", "output_0"]
    np.testing.assert_array_equal(
        got["attention/a"], [[[-1.0, 126.5], [63.0, 0.5]], [[2.0, 2.0], [2.0, 2.0]]]
    )
    assert got["attention/a"].dtype == np.float32 and got["attention/b"] is outputs["attention/b"]
    assert "attention/a/scale" in outputs  # the caller's dict is left alone
