"""The console script's model commands: list, info, predict, export, query (against the
embedded server over REST and gRPC), on a tiny registered model with known weights."""

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

import zoo
from tests.zoo.test_load import CLASSES, NAME, _numpy_forward, _register, _spec, _state
from zoo.cli import main


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    state = _state()
    path = tmp_path / "tiny.safetensors"
    save_file(state, str(path))
    _register(monkeypatch, [_spec("local", path.as_uri(), None)])
    return state


@pytest.fixture
def png_files(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(2, 9, 11, 3), dtype=np.uint8)
    paths = []
    for index, image in enumerate(pixels):
        paths.append(tmp_path / f"image{index}.png")
        Image.fromarray(image).save(paths[-1])
    return [str(p) for p in paths], pixels


def _expected_scores(state, pixels):
    x = (pixels.astype("float32") / 255.0 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 1.0])
    logits, _ = _numpy_forward(state, x)
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    return scores / scores.sum(-1, keepdims=True)


def _top_line(path, scores, top):
    best = np.argsort(-scores)[:top]
    return f"{path}: " + ", ".join(f"class {i} {scores[i]:.3f}" for i in best)


def _result_lines(out):
    """The printed predictions (the first load also prints Keras' download progress)."""
    return [line for line in out.splitlines() if ".png: " in line]


def test_list_and_info(tiny, capsys, monkeypatch):
    assert main(["list", "--pretrained"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["model", "family", "timm", "weights"]
    assert any(row.split() == [NAME, "-", "local"] for row in rows)
    assert main(["info", NAME]) == 0
    out = capsys.readouterr().out
    assert "weights 'local'" in out and "metric: none (test fixture)" in out
    assert "architecture:" not in out
    _register(
        monkeypatch,
        [
            _spec(
                "local",
                "file:///x.weights.h5",
                None,
                file_format="weights.h5",
                architecture={"width": 6, "core": "rnn"},
            )
        ],
    )
    assert main(["info", NAME]) == 0
    assert "    architecture: width=6, core='rnn'\n" in capsys.readouterr().out
    assert main(["info", "nope"]) == 1
    assert "error: unknown model 'nope'" in capsys.readouterr().err


def test_predict_prints_the_top_classes(tiny, png_files, capsys):
    paths, pixels = png_files
    assert main(["predict", NAME, *paths, "--weights", "local", "--top", "3"]) == 0
    expected = _expected_scores(tiny, pixels)
    assert _result_lines(capsys.readouterr().out) == [
        _top_line(path, row, 3) for path, row in zip(paths, expected)
    ]


def test_export_then_query_over_rest_and_grpc(tiny, png_files, tmp_path, capsys):
    import serving
    from serving.models import single_model_config

    paths, pixels = png_files
    base = tmp_path / "models"
    assert main(["export", NAME, "--weights", "local", "--base-path", str(base)]) == 0
    assert (base / NAME / "1" / "saved_model.pb").is_file()
    capsys.readouterr()
    expected = _expected_scores(tiny, pixels)
    server = serving.Server(
        single_model_config(NAME, str(base / NAME)), rest_api_port=0, port=0, host="127.0.0.1"
    )
    with server:
        for flag, target in (
            ("--rest", f"http://127.0.0.1:{server.rest_api_port}"),
            ("--grpc", f"127.0.0.1:{server.port}"),
        ):
            assert main(["query", NAME, *paths, flag, target, "--top", str(CLASSES)]) == 0
            assert _result_lines(capsys.readouterr().out) == [
                _top_line(path, row, CLASSES) for path, row in zip(paths, expected)
            ]
    assert main(["query", NAME, *paths]) == 1
    assert "error: give exactly one of --rest URL or --grpc" in capsys.readouterr().err
    assert zoo.list_models()  # the registry is intact after the CLI ran
