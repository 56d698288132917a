"""Evaluation preprocessing: timm's transform on the host (exact), in the graph (within one
8-bit level), carried by the model through save / load, and in the exported image
signature. Fixtures: tests/fixtures/zoo/preprocessing_chelsea.npz (tools/
make_preprocessing_fixtures.py, from timm 1.0.29); the oracle tests run timm itself."""

import io
import json
import pathlib

import keras
import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.models import ZooModel
from zoo.preprocessing import ImagePreprocessing

FIXTURE = (
    pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "zoo" / "preprocessing_chelsea.npz"
)
TIMM_MODELS = (
    "resnet50",
    "seresnet50",
    "seresnext50_32x4d",
    "ecaresnet50d",
    "gcresnet50t",
    "botnet26t_256",
    "halonet26t",
    "lambda_resnet26t",
)


def _fixture_cases():
    data = np.load(FIXTURE)
    cases = {}
    for key in data.files:
        if key.startswith("config_"):
            case = key[len("config_") :]
            preprocessing = ImagePreprocessing.from_config(json.loads(str(data[key])))
            pixels = data[f"pixels_{case}"]
            mean = np.asarray(preprocessing.mean, np.float32)
            std = np.asarray(preprocessing.std, np.float32)
            tensor = (pixels.astype(np.float32) / np.float32(255) - mean) / std
            cases[case] = (preprocessing, tensor)
    return data["jpeg"].tobytes(), cases


JPEG, CASES = _fixture_cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_host_side_equals_timm_tensor(case):
    preprocessing, expected = CASES[case]
    got = preprocessing.load([io.BytesIO(JPEG)])
    assert got.shape == (1, *expected.shape) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_in_graph_is_within_one_8_bit_level_of_timm(case):
    import tensorflow as tf

    preprocessing, expected = CASES[case]
    got = preprocessing.decode_tf(tf.constant(JPEG)).numpy()
    level = 1 / 255 / min(preprocessing.std)
    difference = np.abs(got - expected)
    # measured: benchmarks/results/preprocessing_parity.md (0.06% of values, one level)
    assert difference.max() <= level + 1e-5
    assert (difference > 1e-5).mean() < 0.005
    stretched = preprocessing.decode_tf(tf.constant(JPEG), resize="bilinear_stretch").numpy()
    assert np.abs(stretched - expected).max() > 10 * level  # the check can fail


def test_registry_carries_the_eval_transform_of_each_checkpoint():
    for name in TIMM_MODELS:
        entry = registry.get_spec(name).weights_for("imagenet")
        assert entry.preprocessing.size == entry.input_size
        assert entry.preprocessing.source.startswith(
            f"timm 1.0.29 pretrained_cfg of {entry.source.removeprefix('timm/')}"
        )
    lambda_resnet = registry.get_spec("lambda_resnet26t").weights_for("imagenet")
    assert lambda_resnet.preprocessing.crop_pct == 0.94


def test_geometry_of_the_resize():
    square = ImagePreprocessing(size=(224, 224), crop_pct=0.875)
    assert square.scale_size == (256, 256)
    assert square.resized_size(300, 451) == (256, 384)  # int(256 * 451 / 300)
    assert square.resized_size(640, 427) == (383, 256)
    assert ImagePreprocessing(size=(96, 128), crop_pct=0.875).resized_size(300, 451) == (109, 164)
    squash = ImagePreprocessing(size=(72, 60), crop_pct=0.9, crop_mode="squash")
    assert squash.resized_size(300, 451) == (80, 66)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(size=(0, 3)), "size must be"),
        (dict(crop_pct=1.5), r"crop_pct must be in \(0, 1\]"),
        (dict(crop_mode="border"), "crop_mode must be one of center, squash"),
        (dict(interpolation="cubic"), "interpolation must be one of"),
        (dict(mean=(0.5, 0.5)), "mean and std must both have 1 or 3 values"),
        (dict(std=(1.0, 0.0, 1.0)), "std must be positive"),
    ],
)
def test_bad_config_names_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImagePreprocessing(**{"size": (8, 8), **kwargs})


def test_no_tensorflow_equivalent_is_refused_at_export():
    import tensorflow as tf

    with pytest.raises(ValueError, match="interpolation 'hamming' has no TensorFlow equivalent"):
        ImagePreprocessing(size=(8, 8), interpolation="hamming").decode_tf(tf.constant(JPEG))


def _tiny_imagenet_model():
    inputs = keras.Input((24, 20, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="fc")(x)
    preprocessing = ImagePreprocessing(size=(24, 20), crop_pct=0.9, interpolation="bicubic")
    return ZooModel(inputs, outputs, name="tiny", preprocessing=preprocessing)


def test_preprocessing_survives_save_and_load(tmp_path):
    model = _tiny_imagenet_model()
    model.save(tmp_path / "tiny.keras")
    loaded = keras.saving.load_model(tmp_path / "tiny.keras")
    assert isinstance(loaded, ZooModel) and loaded.preprocessing == model.preprocessing
    images = loaded.preprocessing.load([io.BytesIO(JPEG)])
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6
    )
    pixels = np.full((1, 24, 20, 3), 255.0, np.float32)
    white = (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(loaded.preprocess_input(pixels)[0, 0, 0], white, rtol=1e-6)


@pytest.mark.slow
def test_zoo_models_carry_their_weights_preprocessing(tmp_path):
    model = zoo.build("lambda_resnet26t", include_top=False, pooling="avg")
    assert isinstance(model, ZooModel)
    assert (
        model.preprocessing
        == registry.get_spec("lambda_resnet26t").weights_for("imagenet").preprocessing
    )
    other_size = zoo.build("seresnet50", input_shape=(160, 192, 3), include_top=False)
    assert other_size.preprocessing.size == (160, 192) and other_size.preprocessing.crop_pct == 0.95
    stn = zoo.build("stn_cnn")  # trained here: squash to 42 x 42, grayscale in [0, 1]
    assert (stn.preprocessing.crop_mode, stn.preprocessing.mean, stn.preprocessing.std) == (
        "squash",
        (0.0,),
        (1.0,),
    )
    stn.save(tmp_path / "stn.keras")
    assert keras.saving.load_model(tmp_path / "stn.keras").preprocessing == stn.preprocessing


def test_image_signature_decodes_with_the_models_preprocessing(tmp_path):
    import tensorflow as tf

    from serving.saved_model import export

    model = _tiny_imagenet_model()
    version = export(model, tmp_path, "tiny", version=1, image_signature=True)
    signature = tf.saved_model.load(version).signatures["serving_images"]
    got = signature(images=tf.constant([JPEG, JPEG]))["probabilities"].numpy()
    decoded = model.preprocessing.decode_tf(tf.constant(JPEG)).numpy()
    in_graph = model.predict(decoded[None], verbose=0)
    np.testing.assert_allclose(got, np.concatenate([in_graph, in_graph]), rtol=1e-5, atol=1e-6)
    host = model.predict(model.preprocessing.load([io.BytesIO(JPEG)]), verbose=0)
    np.testing.assert_allclose(got[:1], host, atol=1e-3)


# --- against timm itself ------------------------------------------------------------------


def _photo_files():
    """scikit-image's photographs as JPEG (quality 90) and PNG files."""
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image (test extra)")
    from PIL import Image

    files = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        pixels = getattr(skimage_data, name)()
        for fmt, options in (("JPEG", dict(quality=90)), ("PNG", {})):
            buffer = io.BytesIO()
            Image.fromarray(pixels).convert("RGB").save(buffer, format=fmt, **options)
            files[f"{name}.{fmt.lower()}"] = buffer.getvalue()
    return files


@pytest.mark.oracle
def test_registry_facts_equal_timm_pretrained_cfg():
    timm = pytest.importorskip("timm", reason="needs the `oracle` extra")
    for name in TIMM_MODELS:
        entry = registry.get_spec(name).weights_for("imagenet")
        cfg = timm.models.get_pretrained_cfg(entry.source.removeprefix("timm/"))
        p = entry.preprocessing
        assert (3, *p.size) == tuple(cfg.input_size), name
        assert (p.crop_pct, p.crop_mode, p.interpolation) == (
            cfg.crop_pct,
            cfg.crop_mode,
            cfg.interpolation,
        ), name
        assert (p.mean, p.std) == (tuple(cfg.mean), tuple(cfg.std)), name


@pytest.mark.oracle
@pytest.mark.slow
def test_host_side_equals_timm_on_photographs_for_every_checkpoint():
    """timm's reference: `create_transform(**resolve_data_config(pretrained_cfg=...))` of
    timm 1.0.29 on the same image files."""
    timm = pytest.importorskip("timm", reason="needs the `oracle` extra")
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    files = _photo_files()
    configs = {
        name: (
            registry.get_spec(name).weights_for("imagenet").preprocessing,
            resolve_data_config(
                pretrained_cfg=timm.models.get_pretrained_cfg(
                    registry.get_spec(name).weights_for("imagenet").source[5:]
                ).to_dict()
            ),
        )
        for name in TIMM_MODELS
    }
    for size, crop_pct, mode in (((96, 128), 0.875, "center"), ((128, 96), 0.9, "squash")):
        configs[f"{mode}{size}"] = (
            ImagePreprocessing(size=size, crop_pct=crop_pct, crop_mode=mode),
            dict(
                input_size=(3, *size),
                crop_pct=crop_pct,
                crop_mode=mode,
                interpolation="bicubic",
                mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225),
            ),
        )
    for name, (preprocessing, timm_config) in configs.items():
        transform = create_transform(**timm_config)
        batch = preprocessing.load([io.BytesIO(data) for data in files.values()])
        for got, (file_name, data) in zip(batch, files.items()):
            with Image.open(io.BytesIO(data)) as image:
                expected = transform(image.convert("RGB")).permute(1, 2, 0).numpy()
            np.testing.assert_allclose(
                got, expected, rtol=0, atol=1e-6, err_msg=f"{name} on {file_name}"
            )
