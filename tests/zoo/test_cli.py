"""The console script as a user meets it: pretrained weights by default, what `train` writes
accepted by `predict` and `export`, RAM served, errors on one line (`--debug` for the
traceback), `list PATTERN`, commands printed for a fresh shell, and no TensorFlow for the
registry commands.

Error cases run the console script in a subprocess (PYTHONPATH puts this checkout first);
the commands that need TensorFlow run in-process through `zoo.cli.main`, where it is loaded
already, except one end-to-end subprocess test marked slow.
"""

import fnmatch
import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo import cli, registry

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = pathlib.Path(sys.executable).absolute().parent / "keras-attention-zoo"


def _command():
    return [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "zoo"]


def _env(**extra):
    """The test's environment as a user's shell has it: this checkout first on the path, no
    TF_CPP_MIN_LOG_LEVEL (tests/conftest.py sets one)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.update(extra)
    return env


def _run(*args, env=None, timeout=120):
    return subprocess.run(
        [*_command(), *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=timeout,
        cwd=ROOT,
    )


def _one_error_line(result, *fragments, status=1):
    assert result.returncode == status, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def digit_png(tmp_path):
    """A 50x40 grayscale PNG (not the model's input size: predict resizes it)."""
    pixels = (np.random.default_rng(0).random((50, 40)) * 255).astype("uint8")
    path = tmp_path / "digit.png"
    Image.fromarray(pixels).save(path)
    return path


# ------------------------------------------------------------ registry commands, no TF


def test_list_info_and_attention_import_neither_keras_nor_tensorflow():
    code = (
        "import sys\nimport zoo.tasks\nfrom zoo.cli import main\n"
        "assert main(['list']) == 0 and main(['info', 'seresnet50']) == 0\n"
        "assert main(['attention']) == 0\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_list_takes_a_wildcard_like_timm_list_models():
    every = zoo.list_models()
    expected = [name for name in every if fnmatch.fnmatchcase(name, "*se*")]
    assert zoo.list_models("*se*") == expected and "seresnet50" in expected
    assert "resnet50" not in expected
    with pytest.raises(ValueError, match="pattern must be a string"):
        zoo.list_models(True)
    assert zoo.list_models("*se*", pretrained=True) == [
        name for name in expected if registry.get_spec(name).weights
    ]
    result = _run("list", "*se*")
    assert result.returncode == 0, result.stderr
    assert [row.split()[0] for row in result.stdout.splitlines()[1:]] == expected
    _one_error_line(_run("list", "nothing*"), "no model matches 'nothing*'")


# ------------------------------------------------------------ errors on one line


def test_unknown_model_names_the_closest(digit_png):
    line = _one_error_line(
        _run("info", "seresnet5"), "unknown model 'seresnet5'", "did you mean 'seresnet50'"
    )
    assert "--debug" in line
    _one_error_line(_run("predict", "seresnet5", str(digit_png)), "did you mean 'seresnet50'")


def test_bad_flag_is_one_usage_line():
    _one_error_line(
        _run("predict", "stn_cnn", "x.png", "--bogus"), "unrecognized arguments: --bogus", status=2
    )
    _one_error_line(
        _run("export", "stn_cnn", "--input-shape", "28x28"),
        "expected HEIGHTxWIDTHxCHANNELS",
        status=2,
    )


def test_missing_files_are_named(tmp_path, digit_png):
    _one_error_line(
        _run("predict", "stn_cnn", str(tmp_path / "nope.png")),
        f"no such image file: {tmp_path / 'nope.png'}",
    )
    _one_error_line(
        _run(
            "predict", "stn_cnn", str(digit_png), "--weights", str(tmp_path / "run" / "model.keras")
        ),
        "is neither a file nor a weights tag of stn_cnn (rts_mnist)",
    )


def test_model_without_weights_refuses_predict_and_export(digit_png):
    assert not registry.get_spec("nl_resnet50").weights
    for args in (("predict", "nl_resnet50", str(digit_png)), ("export", "nl_resnet50")):
        _one_error_line(
            _run(*args),
            "nl_resnet50 has no pretrained weights",
            "--weights none",
            "--weights FILE",
        )


def test_debug_shows_the_traceback():
    result = _run("--debug", "info", "seresnet5")
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: unknown model 'seresnet5'" in result.stderr


class _NotFound(http.server.BaseHTTPRequestHandler):
    """Answers every request as TF Serving does for an unknown model name."""

    def _answer(self):
        body = json.dumps({"error": "Servable not found for request: Latest(nope)"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_query_not_found_is_one_line(digit_png):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = _run(
            "query",
            "nope",
            str(digit_png),
            "--rest",
            f"http://127.0.0.1:{server.server_address[1]}",
        )
    finally:
        server.shutdown()
        server.server_close()
    _one_error_line(result, "NOT_FOUND", "Servable not found for request: Latest(nope)")


@pytest.mark.slow
def test_offline_download_is_one_line_naming_the_file(tmp_path, digit_png):
    """A registered download that cannot be reached (a closed loopback port stands in for
    no network) ends the command with one line naming where to put the file."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: connections are refused
    code = (
        "import dataclasses, sys\n"
        "from zoo import registry\n"
        "from zoo.cli import main\n"
        "spec = registry.get_spec('seresnet50')\n"
        "entry = dataclasses.replace(spec.weights_for('imagenet'),\n"
        f"    url='http://127.0.0.1:{port}/model.safetensors', sha256=None)\n"
        "registry._REGISTRY['seresnet50'] = dataclasses.replace(spec, weights=(entry,))\n"
        f"sys.exit(main(['predict', 'seresnet50', {str(digit_png)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(KERAS_HOME=str(tmp_path / "keras")),
        timeout=300,
    )
    line = _one_error_line(result, "could not download seresnet50 weights 'imagenet'", "copy it to")
    assert str(tmp_path / "keras") in line


# ------------------------------------------------------------ printed commands


def test_printed_commands_work_in_a_fresh_shell(monkeypatch):
    """The demo prints the console script by absolute path, which runs from a shell that
    never activated the virtual environment (PATH without it)."""
    monkeypatch.setattr(sys, "argv", [os.path.relpath(SCRIPT) if SCRIPT.is_file() else "x"])
    printed = cli._console_script()
    command = printed.split()
    assert pathlib.Path(command[0]).is_absolute()
    bare = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": os.environ.get("HOME", "/")}
    result = subprocess.run(
        [*command, "list", "stn_*"], capture_output=True, text=True, env=bare, cwd="/", timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[0] == "stn_cnn"


# ------------------------------------------------------------ pretrained by default


def _top_line(path, probabilities, top=5):
    best = np.argsort(-probabilities)[:top]
    return f"{path}: " + ", ".join(f"class {i} {probabilities[i]:.3f}" for i in best)


def _pixels(path, size, channels=1):
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as image:
        image = image.convert(mode).resize(size[::-1], Image.BILINEAR)
    return np.asarray(image, "float32").reshape(1, *size, channels)


def test_predict_loads_the_default_weights(digit_png, capsys):
    from zoo.models import RandomWeightsWarning

    assert registry.get_spec("stn_cnn").default_weights == "rts_mnist"
    assert registry.get_spec("seresnet50").default_weights == "imagenet"
    assert registry.get_spec("nl_resnet50").default_weights is None
    model = zoo.load("stn_cnn", weights="rts_mnist")
    expected = model.predict(_pixels(digit_png, (42, 42)) / 255.0, verbose=0)[0]
    with warnings.catch_warnings():
        # the default weights load without a random-weights warning
        warnings.simplefilter("error", RandomWeightsWarning)
        assert cli.main(["predict", "stn_cnn", str(digit_png)]) == 0
        assert capsys.readouterr().out.splitlines() == [_top_line(digit_png, expected)]
        # --weights none: random weights, asked for, so no warning either
        assert cli.main(["predict", "stn_cnn", str(digit_png), "--weights", "none"]) == 0
    assert capsys.readouterr().out.startswith(f"{digit_png}: class ")


def test_zoo_load_warns_once_about_random_weights(monkeypatch):
    from zoo.models import RandomWeightsWarning

    monkeypatch.setattr("zoo.models._WARNED_RANDOM", set())
    with pytest.warns(
        RandomWeightsWarning,
        match=r"zoo.load\('stn_cnn'\) returns random "
        r"weights; pretrained ones exist: weights='rts_mnist'",
    ):
        zoo.load("stn_cnn")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        zoo.load("stn_cnn")  # once per model
        zoo.load("stn_cnn", weights="rts_mnist")
        zoo.build("stn_cnn")  # build is random weights by definition


# ------------------------------------------------------------ RAM


def test_ram_predicts(digit_png, capsys):
    assert cli.main(["predict", "ram", str(digit_png), "--top", "3"]) == 0
    line = capsys.readouterr().out.strip()
    scores = [float(part.split()[-1]) for part in line.split(": ", 1)[1].split(", ")]
    assert line.startswith(f"{digit_png}: class ") and len(scores) == 3
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-3


@pytest.mark.slow
def test_ram_exports_with_an_image_signature(digit_png, tmp_path, capsys):
    import tensorflow as tf

    assert cli.main(["export", "ram", "--base-path", str(tmp_path)]) == 0
    assert "exported ram (translated_mnist)" in capsys.readouterr().out
    loaded = tf.saved_model.load(str(tmp_path / "ram" / "1"))
    assert set(loaded.signatures) == {"serving_default", "serving_images"}
    answer = loaded.signatures["serving_images"](images=tf.constant([digit_png.read_bytes()]))
    probabilities = answer["probabilities"].numpy()
    assert probabilities.shape == (1, 10)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


def test_export_without_the_image_signature(tmp_path, capsys):
    import tensorflow as tf

    assert (
        cli.main(["export", "stn_cnn", "--base-path", str(tmp_path), "--no-image-signature"]) == 0
    )
    assert "exported stn_cnn (rts_mnist)" in capsys.readouterr().out
    assert set(tf.saved_model.load(str(tmp_path / "stn_cnn" / "1")).signatures) == {
        "serving_default"
    }


# ------------------------------------------------------------ what train writes


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder written by `zoo.train.fit` (one step of stn_cnn on 4 classes)."""
    import zoo.train

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(16, 42, 42, 1), dtype=np.uint8)
    labels = rng.integers(0, 4, size=16)
    run_dir = tmp_path_factory.mktemp("runs") / "stn"
    model, history = zoo.train.fit(
        "stn_cnn",
        (images, labels),
        epochs=1,
        steps_per_epoch=1,
        batch_size=8,
        run_dir=str(run_dir),
        validation=False,
        verbose=0,
    )
    return run_dir, model


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def test_predict_and_export_take_what_train_writes(trained_run, digit_png, tmp_path, capsys):
    import tensorflow as tf

    run_dir, model = trained_run
    keras_file = run_dir / "model.keras"
    assert keras_file.is_file()
    logits = model.predict(_pixels(digit_png, (42, 42)) / 255.0, verbose=0)
    assert logits.shape == (1, 4)
    expected = [_top_line(digit_png, _softmax(logits.astype("float64"))[0], 4)]

    assert cli.main(["predict", "stn_cnn", str(digit_png), "--weights", str(keras_file)]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    weights_file = tmp_path / "stn.weights.h5"
    model.save_weights(weights_file)
    assert (
        cli.main(
            [
                "predict",
                "stn_cnn",
                str(digit_png),
                "--weights",
                str(weights_file),
                "--num-classes",
                "4",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == expected

    assert (
        cli.main(
            [
                "export",
                "stn_cnn",
                "--weights",
                str(keras_file),
                "--base-path",
                str(tmp_path / "models"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    loaded = tf.saved_model.load(str(tmp_path / "models" / "stn_cnn" / "1"))
    exact = tmp_path / "exact.png"  # at the input size: no resize on either side
    Image.fromarray(_pixels(digit_png, (42, 42))[0, ..., 0].astype("uint8")).save(exact)
    answer = loaded.signatures["serving_images"](images=tf.constant([exact.read_bytes()]))
    # the run's model outputs logits; the image signature turns them into probabilities
    np.testing.assert_allclose(
        answer["probabilities"].numpy()[0], _softmax(logits)[0], rtol=1e-4, atol=1e-6
    )


@pytest.mark.slow
def test_train_output_loads_exports_and_serves_in_fresh_processes(trained_run, digit_png, tmp_path):
    """train -> predict -> export -> serve as separate commands, and the saved model loads
    in a fresh process with keras_attention and zoo.models imported (Keras 3.15 imports a
    module named in a saved config only for its own packages, so the layers and `ZooModel`
    must be registered first)."""
    run_dir, model = trained_run
    keras_file = str(run_dir / "model.keras")
    code = (
        "import keras_attention, zoo.models, keras, numpy as np, sys\n"
        f"model = keras.saving.load_model({keras_file!r})\n"
        "print(type(model.get_layer('spatial_transformer')).__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1].startswith("keras_attention.")
    predicted = _run("predict", "stn_cnn", str(digit_png), "--weights", keras_file, timeout=300)
    assert predicted.returncode == 0 and predicted.stderr == "", predicted.stderr
    exported = _run(
        "export",
        "stn_cnn",
        "--weights",
        keras_file,
        "--base-path",
        str(tmp_path / "models"),
        timeout=300,
    )
    assert exported.returncode == 0 and exported.stderr == "", exported.stderr
    assert (tmp_path / "models" / "stn_cnn" / "1" / "saved_model.pb").is_file()


def test_predict_a_grayscale_run_of_a_colour_architecture(monkeypatch, tmp_path, capsys):
    """`train --data mnist` on an ImageNet architecture normalises one channel with the
    means of the registry's statistics; predict does the same for such weights."""
    from tests.zoo.test_load import NAME, _register

    _register(monkeypatch)  # mean (0.5, 0.25, 0.0), std (0.5, 0.25, 1.0)
    model = zoo.build(NAME, input_shape=(9, 11, 1))
    weights = tmp_path / "gray.weights.h5"
    model.save_weights(weights)
    pixels = np.random.default_rng(5).integers(0, 256, (9, 11), dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(pixels).save(path)
    x = (pixels.reshape(1, 9, 11, 1) / 255.0 - 0.25) / (1.75 / 3)
    expected = np.asarray(model(x.astype("float32"), training=False))[0]
    assert (
        cli.main(["predict", NAME, str(path), "--weights", str(weights), "--input-shape", "9x11x1"])
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [_top_line(path, expected)]
