"""The README's main job: export the shipped pretrained spatial transformer network, serve it
with the embedded server and query it over REST and gRPC; and the `--train` variant (one
epoch of a CBAM CNN, its attention map, then the same export / serve / query)."""

import json

import numpy as np
import pytest
from PIL import Image

from zoo import cli, demo


def _answers(printed):
    lines = dict(
        line.strip().split(":", 1)
        for line in printed.splitlines()
        if "labels:" in line or "predictions:" in line or "top-1:" in line
    )
    return {key: json.loads(value) for key, value in lines.items()}


def test_demo_serves_the_shipped_pretrained_model(tmp_path, capsys):
    from zoo.tasks import rts_mnist

    assert cli.main(["demo", "--output-dir", str(tmp_path), "--count", "20"]) == 0
    printed = capsys.readouterr().out
    assert "loaded the shipped stn_cnn weights 'rts_mnist'" in printed
    answers = _answers(printed)
    _, labels, _ = rts_mnist("test", seed=0)
    assert answers["true labels"] == labels[:20].tolist()
    # tensors over REST and gRPC and PNG files through the image signature agree exactly
    assert answers["REST predictions"] == answers["gRPC predictions"]
    assert answers["PNG (REST, image signature) top-1"] == answers["gRPC predictions"]
    right = sum(a == b for a, b in zip(answers["gRPC predictions"], labels[:20]))
    assert f"{right} of 20 right" in printed
    assert right >= 16  # the registry records 5.5% test error on this split
    version = tmp_path / "models" / "stn_cnn" / "1"
    assert (version / "saved_model.pb").is_file()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    request = json.loads((tmp_path / "models" / "stn_cnn_request.json").read_text())
    assert np.asarray(request["instances"]).shape == (1, 42, 42, 1)
    assert f"--model_base_path {(tmp_path / 'models' / 'stn_cnn').resolve()}" in printed
    assert "tensorflow/serving" in printed


@pytest.mark.slow
def test_demo_trains_and_writes_the_attention_png(tmp_path, capsys):
    assert cli.main(["demo", "--train", "--output-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    accuracy = float(printed.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.8, printed  # chance is 0.1; one epoch on 4,000 digits gets far above
    png = tmp_path / "cbam_attention.png"
    assert str(png.resolve()) in printed
    image = np.asarray(Image.open(png))
    assert image.shape == (2 * 28 * 4, 8 * 28 * 4, 3)
    assert not list(tmp_path.glob("*.tmp"))
    # The exported model answered over REST and gRPC, identically, mostly right.
    lines = dict(
        line.strip().split(":", 1)
        for line in printed.splitlines()
        if "labels:" in line or "predictions:" in line
    )
    truth = json.loads(lines["true labels"])
    assert json.loads(lines["REST predictions"]) == json.loads(lines["gRPC predictions"])
    assert sum(a == b for a, b in zip(json.loads(lines["REST predictions"]), truth)) >= 3
    assert (tmp_path / "models" / "cbam_cnn" / "1" / "saved_model.pb").is_file()
    request = json.loads((tmp_path / "models" / "cbam_cnn_request.json").read_text())
    assert np.asarray(request["instances"]).shape == (1, 28, 28, 1)


def test_attention_png_tiles_digit_and_blend(tmp_path):
    images = np.zeros((2, 28, 28, 1), "float32")
    images[0, 10:18, 10:18] = 1.0
    maps = np.zeros((2, 7, 7, 1), "float32")
    maps[0, 3, 3] = 1.0
    path = demo.attention_png(images, maps, tmp_path / "sub" / "a.png", scale=1)
    sheet = np.asarray(Image.open(path)).astype(int)
    assert sheet.shape == (56, 56, 3)
    assert sheet[14, 14].tolist() == [255, 255, 255]  # bright digit pixel, top row
    # The blended tile is hot (red) at the map's peak, cold elsewhere.
    assert sheet[28 + 14, 14, 0] > sheet[28 + 2, 2, 0]


def test_cli_lists_attention_names(capsys):
    assert cli.main(["attention"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    import keras_attention

    assert names == keras_attention.list_attention()


def test_cli_rejects_zero_epochs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
