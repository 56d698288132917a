"""`predict` and `query` on a segmentation model: palette PNG masks beside the input (or in
--output), equal to the in-process class maps; one-line errors for bad input."""

import io

import keras
import numpy as np
import pytest
from PIL import Image

from tests.serving.test_segmentation_export import INPUT, expected_image_maps, png, segmenter
from zoo import cli
from zoo.preprocessing import default_preprocessing


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return segmenter()


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for index, shape in enumerate([(10, 14, 3), (20, 9, 3)]):
        path = tmp_path / f"scene{index}.png"
        path.write_bytes(png(rng.integers(0, 256, shape, dtype=np.uint8)))
        paths.append(path)
    return paths


def read_mask(path):
    image = Image.open(path)
    assert image.mode == "P"
    return np.asarray(image)


def test_predict_writes_palette_masks_beside_the_images(model, images, monkeypatch, capsys):
    unit = default_preprocessing(INPUT[:2], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    monkeypatch.setattr(cli, "_load_model", lambda args: (model, unit, "test weights"))
    assert cli.main(["predict", "any_name", *map(str, images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for path, line in zip(images, lines):
        mask_path = path.with_name(f"{path.stem}.mask.png")
        assert line.startswith(f"{path}: mask {mask_path} (")
        want = expected_image_maps(model, [path.read_bytes()])[0]
        np.testing.assert_array_equal(read_mask(mask_path), want)
    # the palette shows the classes in PASCAL VOC's colours
    rgb = np.asarray(Image.open(images[0].with_name("scene0.mask.png")).convert("RGB"))
    from zoo.scenes import palette

    np.testing.assert_array_equal(
        rgb, palette(256)[read_mask(images[0].with_name("scene0.mask.png"))]
    )


def test_predict_errors_are_one_line(model, images, tmp_path, monkeypatch, capsys):
    unit = default_preprocessing(INPUT[:2], mean=(0.0,) * 3, std=(1.0,) * 3)
    monkeypatch.setattr(cli, "_load_model", lambda args: (model, unit, "test weights"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert cli.main(["predict", "m", str(broken)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"cannot read {broken} as an image" in error
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert cli.main(["predict", "m", str(images[0]), "--output", str(a_file)]) == 1
    assert f"--output {a_file} is a file, not a folder" in capsys.readouterr().err
    mask_named = tmp_path / "x.mask.png"
    mask_named.write_bytes(images[0].read_bytes())
    other = tmp_path / "x.png"
    other.write_bytes(images[0].read_bytes())
    assert cli.main(["predict", "m", str(other), str(mask_named)]) == 1
    assert "would overwrite an input image" in capsys.readouterr().err
    assert mask_named.read_bytes() == images[0].read_bytes()  # nothing lost


@pytest.fixture(scope="module")
def served(model, tmp_path_factory):
    import serving
    from serving.models import single_model_config

    base = tmp_path_factory.mktemp("cli_segmentation")
    serving.export(model, base, "seg", image_signature=True, task="segmentation")
    with serving.Server(
        single_model_config("seg", str(base / "seg")), rest_api_port=0, port=0, host="127.0.0.1"
    ) as server:
        yield server


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_query_writes_the_served_masks(served, model, images, tmp_path, protocol, capsys):
    address = (
        f"http://127.0.0.1:{served.rest_api_port}"
        if protocol == "rest"
        else f"127.0.0.1:{served.port}"
    )
    out = tmp_path / f"masks-{protocol}"
    assert (
        cli.main(["query", "seg", str(images[0]), f"--{protocol}", address, "--output", str(out)])
        == 0
    )
    assert f"mask {out / 'scene0.mask.png'} (10x14;" in capsys.readouterr().out
    want = expected_image_maps(model, [images[0].read_bytes()])[0]
    np.testing.assert_array_equal(read_mask(out / "scene0.mask.png"), want)
    # two sizes in one request: the server's INVALID_ARGUMENT, on one line
    assert cli.main(["query", "seg", *map(str, images), f"--{protocol}", address]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "same height and width" in error
    assert cli.main(["query", "seg", str(tmp_path / "absent.png"), f"--{protocol}", address]) == 1
    assert "no such image file" in capsys.readouterr().err


def test_export_command_exports_a_segmentation_model(model, tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    unit = default_preprocessing(INPUT[:2], mean=(0.5,) * 3, std=(0.25,) * 3)
    monkeypatch.setattr(cli, "_load_model", lambda args: (model, unit, "test weights"))
    assert cli.main(["export", "any", "--base-path", str(tmp_path), "--serving-name", "s"]) == 0
    loaded = tf.saved_model.load(str(tmp_path / "s" / "1"))
    image = png(np.random.default_rng(2).integers(0, 256, (12, 16, 3), dtype=np.uint8))
    got = loaded.signatures["serving_images"](images=tf.constant([image]))["class_ids"].numpy()
    pixels = np.asarray(Image.open(io.BytesIO(image)), np.float32)[None]
    want = model.predict((pixels / 255.0 - 0.5) / 0.25, verbose=0).argmax(-1)
    np.testing.assert_array_equal(got, want)  # same size: no resampling either way
