"""`keras-attention-zoo export --attention` and `query --attention OUT_DIR`: the shipped
spatial transformer network's sampling footprint, served and drawn over each queried image."""

import numpy as np
import pytest
from PIL import Image

from zoo import cli


def test_export_names_a_bad_attention_layer_on_one_line(tmp_path, capsys):
    argv = ["export", "stn_cnn", "--base-path", str(tmp_path), "--attention", "nope"]
    assert cli.main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("keras-attention-zoo export: error: attention_signature layer 'nope'")
    assert "its attention layers: ['spatial_transformer']" in error and "\n" not in error
    assert not (tmp_path / "stn_cnn").exists() or not any((tmp_path / "stn_cnn").iterdir())


@pytest.mark.slow
def test_query_writes_each_map_over_its_image(tmp_path, capsys):
    from serving import Client
    from serving.models import single_model_config
    from serving.server import Server

    base = tmp_path / "models"
    assert cli.main(["export", "stn_cnn", "--base-path", str(base), "--attention"]) == 0
    assert "serving_default, serving_images, attention, serving_images_attention" in (
        capsys.readouterr().out
    )
    rng = np.random.default_rng(0)
    paths = [tmp_path / "a" / "digit.png", tmp_path / "b" / "digit.png"]  # the same stem
    shapes = [(50, 40), (30, 33, 3)]
    for path, shape in zip(paths, shapes):
        path.parent.mkdir()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    out_dir = tmp_path / "maps"
    config = single_model_config("stn_cnn", str(base / "stn_cnn"))
    with Server(config, rest_api_port=0, port=0, host="127.0.0.1", poll_wait_seconds=0) as server:
        url = f"http://127.0.0.1:{server.rest_api_port}"
        argv = ["query", "stn_cnn", *map(str, paths), "--rest", url, "--attention", str(out_dir)]
        assert cli.main(argv) == 0
        with Client(rest=url) as client:
            served = client.predict(
                "stn_cnn",
                [path.read_bytes() for path in paths],
                signature_name="serving_images_attention",
            )
    printed = capsys.readouterr().out.splitlines()
    written = [
        out_dir / "0-digit.spatial_transformer.png",
        out_dir / "1-digit.spatial_transformer.png",
    ]
    assert printed[:2] == [f"attention map written to {path}" for path in written]
    assert printed[2].startswith(f"{paths[0]}: class ")  # then the top classes, as without
    map_images = cli._plain_module("zoo.train", "map_images.py")
    footprint = served["attention/spatial_transformer"]
    assert footprint.shape == (2, 42, 42)
    for index, (path, target) in enumerate(zip(paths, written)):
        display = np.asarray(Image.open(path).convert("RGB"), "float32")[None] / 255.0
        want = map_images.overlay(display, footprint[index : index + 1])[0]
        np.testing.assert_array_equal(np.asarray(Image.open(target)), want)
        assert want.shape[:2] == shapes[index][:2]
