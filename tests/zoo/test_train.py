"""zoo.train: recipes (schedule, optimizer), deterministic input pipelines (tf.data and
host/numpy agree), one training step of every zoo model, image folders, mixed precision
(bfloat16, float16 with loss scaling, float16 overflow message), TensorBoard attention maps,
and the `train` subcommand."""

import glob
import importlib
import io
import math
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

import zoo
import zoo.train
from zoo.train import callbacks as cb
from zoo.train import data as data_lib
from zoo.train import map_images, recipes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_cnn(input_shape, num_classes, attention="cbam", scale=1.0):
    """conv -> attention -> conv -> GAP -> logits: a model that trains in milliseconds."""
    from keras_attention.layers import CBAM

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    if attention:
        x = CBAM(name="cbam")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if scale != 1.0:  # in the compute dtype: past 65,504 under float16
        x = keras.layers.Rescaling(scale, name="blow_up")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, dtype="float32", name="fc")(x))


def digits(n=64, size=16):
    images, labels = zoo.datasets.mnist_subset("test")
    images = keras.ops.convert_to_numpy(keras.ops.image.resize(images[:n], (size, size)))
    return images, labels[:n]


# -- recipes --------------------------------------------------------------------------


def test_schedule_is_linear_warmup_then_cosine():
    recipe = zoo.train.Recipe(
        learning_rate=0.1, warmup_epochs=2, warmup_start=0.1, min_lr_ratio=0.05
    )
    spe, total, batch = 10, 200, 512  # warmup = min(2 * 10, 200 // 10) = 20 steps
    schedule = recipe.schedule(batch, spe, total)
    peak = 0.1 * 512 / 256
    for step in (0, 5, 19, 20, 21, 110, 199, 200):
        expected = (
            peak * (0.1 + 0.9 * step / 20)
            if step < 20
            else peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - 20) / 180)))
        )
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5), step
        assert recipes.cosine_value(recipe, batch, spe, total, step) == pytest.approx(expected)


def test_recipe_optimizers_and_weight_decay_exclusions():
    sgd = recipes.get_recipe("seresnet50").make_optimizer(128, 10, 100)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.9
    byob = recipes.get_recipe("botnet26t_256")
    assert byob.optimizer == "adamw"
    scaled = byob.make_optimizer(64, 10, 100, loss_scaling=True)
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert isinstance(scaled.inner_optimizer, keras.optimizers.AdamW)
    # digits are not mirror symmetric: the small-data recipe never flips
    assert recipes.get_recipe("seresnet50", small_data=True).flip is False
    model = tiny_cnn((8, 8, 1), 3)
    optimizer = byob.make_optimizer(64, 10, 100)
    recipes.exclude_from_weight_decay(optimizer, model)
    optimizer.build(model.trainable_variables)
    excluded = {
        v.name for v in model.trainable_variables if optimizer._use_weight_decay(v) is False
    }
    assert excluded == {v.name for v in model.trainable_variables if len(v.shape) <= 1}
    with pytest.raises(ValueError, match="optimizer must be one of"):
        zoo.train.Recipe(optimizer="lamb")


# -- data -------------------------------------------------------------------------------


def test_batches_are_a_function_of_seed_and_step_and_cover_each_epoch():
    data = data_lib.load(digits(48, 8))
    a = data_lib.Pipeline(data, 16, seed=3, crop_padding=0.25, flip=True)
    b = data_lib.Pipeline(data, 16, seed=3, crop_padding=0.25, flip=True)
    assert a.steps_per_epoch == 3
    for step in (0, 4, 7):
        for x, y in zip(a.plan(step), b.plan(step)):
            np.testing.assert_array_equal(x, y)
    epoch1 = np.concatenate([a.plan(s)[0] for s in range(3, 6)])
    assert sorted(epoch1.tolist()) == list(range(48))
    assert not np.array_equal(epoch1, np.concatenate([a.plan(s)[0] for s in range(3)]))
    assert not np.array_equal(a.plan(0)[0], data_lib.Pipeline(data, 16, seed=4).plan(0)[0])


def test_augmentation_is_reflect_pad_crop_and_flip():
    rng = np.random.default_rng(0)
    images = rng.random((3, 5, 6, 2)).astype("float32")
    offsets = np.array([[0, 0], [2, 1], [4, 4]], np.int32)
    flips = np.array([False, True, False])
    out = data_lib.augment(np, images, offsets, flips, 2, np.float32(0.5), np.float32(2.0), 1.0)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(3):
        crop = padded[i, offsets[i, 0] : offsets[i, 0] + 5, offsets[i, 1] : offsets[i, 1] + 6]
        crop = crop[:, ::-1] if flips[i] else crop
        np.testing.assert_allclose(out[i], (crop - 0.5) / 2.0, rtol=1e-6)


def test_tf_data_and_host_pipelines_give_the_same_batches():
    pytest.importorskip("tensorflow")
    data = data_lib.load(digits(40, 12))
    pipeline = data_lib.Pipeline(
        data, 8, seed=1, crop_padding=0.2, flip=True, mean=(0.1,), std=(0.3,)
    )
    batches = list(pipeline.tf_dataset(3, 4).as_numpy_iterator())
    assert len(batches) == 4
    for step, (x, y) in zip(range(3, 7), batches):
        hx, hy = pipeline.numpy_batch(step)
        np.testing.assert_allclose(x, hx, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(y, hy)
    # digits never flip, whatever the recipe says
    assert data_lib.Pipeline(data_lib.load("mnist", "test"), 8, flip=True).flip is False


def test_image_folder_layout_and_decode(tmp_path):
    pytest.importorskip("tensorflow")
    colours = {"blue": (0, 0, 255), "red": (255, 0, 0)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.new("RGB", (20 + i, 16), colour).save(tmp_path / name / f"{i}.png")
    train = data_lib.load(str(tmp_path), "train", image_size=8)
    test = data_lib.load(str(tmp_path), "test", image_size=8)
    assert train.class_names == ["blue", "red"] and train.num_classes == 2
    assert len(train) == 18 and len(test) == 2  # every 10th file of each class held out
    assert not set(train.files) & set(test.files)
    pipeline = data_lib.Pipeline(test, 2, training=False)
    x, y = pipeline.arrays()
    assert x.shape == (2, 8, 8, 3)
    for image, label in zip(x, y.argmax(-1)):
        np.testing.assert_allclose(
            image.mean((0, 1)), np.array(colours[train.class_names[label]]) / 255.0, atol=1e-6
        )
    model, history = zoo.train.fit(
        tiny_cnn,
        str(tmp_path),
        epochs=2,
        batch_size=6,
        image_size=8,
        verbose=0,
        model_kwargs={"attention": None},
    )
    assert model.output.shape[-1] == 2
    assert np.isfinite(history.history["loss"]).all() and "val_accuracy" in history.history


def test_unknown_data_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown data 'imagenet': expected one of mnist"):
        data_lib.load("imagenet")


# -- every zoo model, one step -----------------------------------------------------------

# Smallest inputs each model accepts (fixed-size models need room for their stages).
SIZES = {
    "botnet26t_256": 64,
    "aa_resnet50": 64,
    "halonet26t": 256,
    "san10_pairwise": 128,
    "san10_patchwise": 128,
    "ram": 60,
    "stn_cnn": 42,
}
FAST = ("seresnet50",)  # the default run; every other model is `slow`


class _Snapshot(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.before = [np.array(w) for w in self.model.trainable_weights]


def _models():
    return [
        pytest.param(name, marks=() if name in FAST else pytest.mark.slow)
        for name in zoo.list_models()
        # per-pixel labels: the segmentation models' training step is in
        # tests/keras_attention/test_zoo_segmentation.py; clips, not images: the video
        # models train in tools/train_video.py (tests/zoo/test_video.py reloads them); a
        # pipeline trained stage by stage (its FilterNet only picks windows, so no gradient
        # reaches it): tools/train_two_level.py (tests/zoo/test_two_level.py reloads it);
        # heatmaps, not classes: the pose models train in tools/train_pose.py
        # (tests/zoo/test_pose.py)
        if zoo.model_info(name).kind != "segmentation"
        and zoo.model_info(name).family not in ("video", "two_level", "pose")
    ]


@pytest.mark.parametrize("name", _models())
def test_recipe_trains_every_zoo_model_one_step(name):
    spec = zoo.model_info(name)
    size = SIZES.get(name, 32)
    channels = spec.default_input_shape[-1]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, size, size, channels)).astype(np.uint8)
    snapshot = _Snapshot()
    model, history = zoo.train.fit(
        name,
        (images, np.array([0, 1, 2, 1])),
        epochs=1,
        batch_size=2,
        steps_per_epoch=1,
        run_eagerly=True,
        verbose=0,
        callbacks=[snapshot],
    )
    assert math.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations) == 1
    unchanged = {
        w.path
        for a, w in zip(snapshot.before, model.trainable_weights)
        if np.array_equal(a, np.array(w))
    }
    # Zero-initialised attention outputs (e.g. timm's GlobalContext) keep the weights
    # inside the attention module at zero gradient for one step; every convolution and
    # dense kernel outside them moves.
    layers = list(model._flatten_layers(include_self=False))
    inside = {id(v) for layer in layers if cb._is_attention_layer(layer) for v in layer.weights}
    kernels = [
        layer.kernel.path
        for layer in layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
        and id(layer.kernel) not in inside
    ]
    assert kernels and not unchanged & set(kernels), sorted(unchanged & set(kernels))[:5]


# -- mixed precision ------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_fit(precision):
    model, history = zoo.train.fit(
        tiny_cnn, digits(32, 12), epochs=2, batch_size=8, mixed_precision=precision, verbose=0
    )
    assert model.get_layer("conv1").compute_dtype == precision
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert model.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # restored after fit
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
        precision == "float16"
    )
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0] * 1.05


def test_float16_overflow_is_explained():
    # activations blown past float16's 65,504: inf -> NaN loss -> TerminateOnNaN
    with pytest.raises(zoo.train.NonFiniteLossError) as error:
        zoo.train.fit(
            tiny_cnn,
            digits(16, 8),
            epochs=1,
            batch_size=8,
            mixed_precision="float16",
            verbose=0,
            model_kwargs={"scale": 1e6, "attention": None},
        )
    message = str(error.value)
    assert re.search(r"the loss became nan at batch \d of the epoch", message), message
    assert "float16 overflowed" in message and "--mixed-precision bfloat16" in message
    assert keras.config.dtype_policy().name == "float32"
    # the same model in float32 trains
    _, history = zoo.train.fit(
        tiny_cnn,
        digits(16, 8),
        epochs=1,
        batch_size=8,
        verbose=0,
        model_kwargs={"scale": 1e6, "attention": None},
    )
    assert math.isfinite(history.history["loss"][0])


# -- TensorBoard ----------------------------------------------------------------------


def _image_summaries(log_dir):
    """{tag: [(step, decoded uint8 images)]} from every event file under log_dir."""
    from tensorboard.backend.event_processing import event_file_loader

    found = {}
    for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "images":
                    continue
                strings = value.tensor.string_val
                width, height = int(strings[0]), int(strings[1])
                images = np.stack([np.asarray(Image.open(io.BytesIO(s))) for s in strings[2:]])
                assert images.shape[1:3] == (height, width)
                found.setdefault(value.tag, []).append((event.step, images))
    return found


def _scalar_tags(log_dir):
    from tensorboard.backend.event_processing import event_file_loader

    tags = set()
    for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True):
        for event in event_file_loader.EventFileLoader(path).Load():
            tags |= {
                v.tag
                for v in event.summary.value
                if v.metadata.plugin_data.plugin_name == "scalars" or v.HasField("simple_value")
            }
    return tags


def test_attention_map_tensorboard_in_a_users_fit(tmp_path):
    images, labels = digits(16, 12)
    model = tiny_cnn((12, 12, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = zoo.train.AttentionMapTensorBoard(str(tmp_path), images[:3])
    model.fit(images, labels, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    found = _image_summaries(str(tmp_path))
    assert set(found) == {"attention/cbam"}
    assert [step for step, _ in found["attention/cbam"]] == [0, 1]
    drawn = found["attention/cbam"][-1][1]
    assert drawn.shape == (3, 12, 12, 3) and drawn.dtype == np.uint8
    # what was written is the overlay of the layer's spatial map on the inputs
    maps = map_images.spatial_map(
        __import__("keras_attention").attention_map(model, "cbam", images[:3]),
        model.get_layer("cbam"),
    )
    expected = map_images.overlay(map_images.normalise(images[:3]), maps)
    np.testing.assert_array_equal(drawn, expected)
    assert {"epoch_loss", "epoch_learning_rate"} <= _scalar_tags(str(tmp_path))


def test_overlay_and_map_reduction_closed_form():
    display = np.zeros((1, 2, 2, 1), "float32")
    maps = np.array([[[0.0, 1.0], [0.5, 0.25]]], "float32")
    out = map_images.overlay(display, maps, alpha=1.0)
    # jet ramp, channel c = clip(1.5 - |4 m - (3, 2, 1)[c]|, 0, 1)
    assert out[0, 0, 1].tolist() == [128, 0, 0]
    assert out[0, 0, 0].tolist() == [0, 0, 128]
    assert out[0, 1, 0].tolist() == [128, 255, 128]
    assert out[0, 1, 1].tolist() == [0, 128, 255]
    half = map_images.overlay(np.ones((1, 2, 2, 1), "float32"), maps, alpha=0.5)
    assert half[0, 0, 1].tolist() == [191, 128, 128]  # 0.5 * white + 0.5 * (0.5, 0, 0)

    class Fake:
        input = keras.KerasTensor((None, 4, 6, 8))
        output = keras.KerasTensor((None, 4, 6, 8))

    spatial = np.random.default_rng(0).random((2, 4, 6, 1))
    np.testing.assert_allclose(map_images.spatial_map(spatial, Fake()), spatial[..., 0], rtol=1e-6)
    channel = np.random.default_rng(1).random((2, 1, 1, 8))
    np.testing.assert_allclose(map_images.spatial_map(channel, Fake()), channel[:, 0, 0], rtol=1e-6)
    self_attention = np.random.default_rng(2).random((2, 3, 24, 24))
    np.testing.assert_allclose(
        map_images.spatial_map(self_attention, Fake()),
        self_attention.mean((1, 2)).reshape(2, 4, 6),
        rtol=1e-6,
    )


JAX_TENSORBOARD = textwrap.dedent("""
    import glob, io, os, sys
    import numpy as np
    import keras
    sys.path.insert(0, {repo!r})
    from tests.zoo.test_train import tiny_cnn, digits, _image_summaries
    import zoo.train
    images, labels = digits(16, 12)
    model = tiny_cnn((12, 12, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = zoo.train.AttentionMapTensorBoard(sys.argv[1], images[:2])
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0, callbacks=[callback])
    found = _image_summaries(sys.argv[1])
    print("TAGS", sorted(found), found["attention/cbam"][0][1].shape, keras.backend.backend())
""")


@pytest.mark.slow
def test_attention_map_tensorboard_on_jax_uses_tensorboards_writer(tmp_path):
    pytest.importorskip("jax")
    script = tmp_path / "run.py"
    script.write_text(JAX_TENSORBOARD.format(repo=REPO))
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "logs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TAGS ['attention/cbam'] (2, 12, 12, 3) jax" in done.stdout


# -- fit with a run folder, and the command line ----------------------------------------


def test_fit_writes_run_folder_and_logs(tmp_path):
    model, history = zoo.train.fit(
        tiny_cnn,
        digits(32, 12),
        epochs=2,
        batch_size=8,
        run_dir=str(tmp_path),
        checkpoint_every=3,
        verbose=0,
    )
    run = history.run
    assert run["steps"] == 8 and run["resumed_from_step"] == 0
    assert os.path.isfile(tmp_path / "model.keras")
    assert not os.path.exists(tmp_path / "backup")  # removed once the run finished
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    x = digits(4, 12)[0]
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    found = _image_summaries(str(tmp_path / "logs"))
    assert [step for step, _ in found["attention/cbam"]] == [0, 1]


def test_train_subcommand_prints_summary(tmp_path, capsys, monkeypatch):
    from zoo import cli

    calls = {}
    real_fit = zoo.train.fit

    def fake_fit(name, dataset, **kwargs):
        calls.update(kwargs, name=name, dataset=dataset)
        return real_fit(
            tiny_cnn, digits(32, 12), epochs=1, batch_size=8, verbose=0, run_dir=kwargs["run_dir"]
        )

    monkeypatch.setattr(zoo.train, "fit", fake_fit)
    code = cli.main(
        [
            "train",
            "seresnet50",
            "--data",
            "translated_mnist",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--mixed-precision",
            "bfloat16",
            "--jit-compile",
            "--run-dir",
            str(tmp_path),
            "--checkpoint-every",
            "50",
            "--image-size",
            "32",
            "--seed",
            "7",
        ]
    )
    assert code == 0
    assert calls["name"] == "seresnet50" and calls["dataset"] == "translated_mnist"
    assert (
        calls["epochs"],
        calls["batch_size"],
        calls["mixed_precision"],
        calls["jit_compile"],
        calls["checkpoint_every"],
        calls["image_size"],
        calls["seed"],
    ) == (3, 16, "bfloat16", True, 50, 32, 7)
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {tmp_path.resolve()}" in out
    assert str((tmp_path / "model.keras").resolve()) in out
    assert "accuracy" in out and "img/s" in out


# -- the parts of fit, each alone -------------------------------------------------------


def test_train_config_is_frozen_and_validated(tmp_path):
    import dataclasses

    config = zoo.train.TrainConfig(tiny_cnn, run_dir=str(tmp_path), model_kwargs={"scale": 2})
    assert config.run_dir == tmp_path and config.model_kwargs == {"scale": 2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    with pytest.raises(ValueError, match="mixed_precision must be one of off, bfloat16"):
        zoo.train.TrainConfig(tiny_cnn, mixed_precision="fp8")
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        zoo.train.TrainConfig(tiny_cnn, run_dir="x", checkpoint_every=True)
    with pytest.raises(ValueError, match="checkpoint_every needs a run_dir"):
        zoo.train.TrainConfig(tiny_cnn, checkpoint_every=2)
    identity = config.identity()
    assert identity["name"].endswith("tests.zoo.test_train.tiny_cnn")
    assert identity != dataclasses.replace(config, seed=1).identity()
    assert identity == dataclasses.replace(config, verbose=0, jit_compile=False).identity()


def test_prepare_data_sizes_and_recipe():
    config = zoo.train.TrainConfig(
        tiny_cnn, digits(40, 12), batch_size=8, epochs=3, steps_per_epoch=2
    )
    prepared = zoo.train.prepare_data(config)
    assert (prepared.batch_size, prepared.steps_per_epoch, prepared.total_steps) == (8, 2, 6)
    assert prepared.input_shape == (12, 12, 1) and prepared.test is None
    assert prepared.recipe == recipes.get_recipe(None, small_data=True)
    unshuffled = data_lib.Pipeline(prepared.train_data, 8, training=False)
    np.testing.assert_array_equal(prepared.sample_images(3), unshuffled.numpy_batch(0)[0][:3])


def test_resumable_fit_finishes_the_interrupted_epoch_first():
    config = zoo.train.TrainConfig(tiny_cnn, digits(32, 12), batch_size=8, epochs=2, verbose=0)
    prepared = zoo.train.prepare_data(config)
    fit_lib = importlib.import_module("zoo.train.fit")  # the module, not zoo.train.fit()
    model = fit_lib.build_model(config, prepared)
    steps = []

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    history, steps_run = zoo.train.resumable_fit(
        model, prepared, [Steps()], start_step=3, verbose=0
    )
    assert steps_run == 5 and steps == [1, 2, 3, 4, 5]  # 1 step of epoch 0, then epoch 1
    assert history.epoch == [0, 1] and len(history.history["loss"]) == 2


def test_run_folder_holds_one_run(tmp_path):
    config = zoo.train.TrainConfig(tiny_cnn, "mnist", run_dir=tmp_path / "run", seed=1)
    folder = zoo.train.RunFolder(tmp_path / "run")
    assert folder.open(config) is False  # new
    assert folder.open(config) is True  # same settings, unfinished: continue
    import dataclasses

    with pytest.raises(zoo.train.RunFolderError, match=r"other settings \(epochs, seed\)"):
        folder.open(dataclasses.replace(config, seed=2, epochs=4))
    folder.finish({"steps": 3})
    with pytest.raises(zoo.train.RunFolderError, match="holds a finished run"):
        folder.open(config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(zoo.train.RunFolderError, match=r"not empty \(notes.txt\)"):
        zoo.train.RunFolder(tmp_path / "other").open(config)


def _event_scalars(log_dir):
    """{tag: [(step, value)]} of the scalar summaries in the event files of one run folder,
    read back with tensorboard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    found = {}
    for tag in accumulator.Tags()["tensors"]:
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        found[tag] = [
            (e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
            for e in accumulator.Tensors(tag)
        ]
    for tag in accumulator.Tags()["scalars"]:
        found[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    return found


def test_fit_writes_train_and_validation_runs_and_step_loss(tmp_path):
    model, history = zoo.train.fit(
        tiny_cnn,
        "mnist",
        epochs=2,
        batch_size=8,
        image_size=12,
        steps_per_epoch=3,
        run_dir=str(tmp_path),
        verbose=0,
    )
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["train", "validation"]
    train, validation = _event_scalars(logs / "train"), _event_scalars(logs / "validation")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "batch_loss"} <= set(train)
    assert set(validation) == {"epoch_loss", "epoch_accuracy"}
    for ours, key in ((train, "loss"), (validation, "val_loss")):
        assert [s for s, _ in ours["epoch_loss"]] == [0, 1]
        np.testing.assert_allclose(
            [v for _, v in ours["epoch_loss"]], history.history[key], rtol=1e-6
        )
    # one batch_loss per step at the global step; Keras' batch loss is the epoch's running
    # mean, so the last of each epoch is that epoch's loss
    assert [s for s, _ in train["batch_loss"]] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(
        [v for s, v in train["batch_loss"] if s in (3, 6)], history.history["loss"], rtol=1e-6
    )
    record = __import__("json").loads((tmp_path / "run.json").read_text())
    assert record["finished"] and record["num_classes"] == 10
    assert record["input_shape"] == [12, 12, 1] and record["steps"] == 6
    assert record["metrics"]["val_loss"] == pytest.approx(history.history["val_loss"][-1])
    with pytest.raises(zoo.train.RunFolderError, match="holds a finished run"):
        zoo.train.fit(
            tiny_cnn,
            "mnist",
            epochs=2,
            batch_size=8,
            image_size=12,
            steps_per_epoch=3,
            run_dir=str(tmp_path),
            verbose=0,
        )


def test_channel_image_closed_form():
    weights = np.array([[0.0, 1.0, 0.5, 0.25], [1.0, 0.0, 0.0, 0.5]], "float32") * 2 - 1
    image = map_images.channel_image(weights, "layer1-0-se", row_height=8, min_width=40)
    band = 10  # ceil(40 / 4) pixels per channel
    top = map_images.LABEL_HEIGHT
    assert image.shape == (1, top + 2 * 8 + 2 + 8 + top, 40, 3) and image.dtype == np.uint8
    # one scale for the batch: its minimum (-1) blue, maximum (1) red, jet in between
    blue, red = [0, 0, 128], [128, 0, 0]
    assert image[0, top + 4, band * 0 + 5].tolist() == blue
    assert image[0, top + 4, band * 1 + 5].tolist() == red
    assert image[0, top + 4, band * 2 + 5].tolist() == [128, 255, 128]  # 0.5: (.5, 1, .5)
    assert image[0, top + 4, band * 3 + 5].tolist() == [0, 128, 255]  # 0.25: (0, .5, 1)
    assert image[0, top + 8 + 4, band * 0 + 5].tolist() == red
    assert image[0, top + 8 + 4, band * 3 + 5].tolist() == [128, 255, 128]
    bar = top + 2 * 8 + 2 + 4
    assert image[0, bar, 0].tolist() == blue and image[0, bar, -1].tolist() == red
    ramp = map_images.heat(np.linspace(0.0, 1.0, 40)) * 255
    np.testing.assert_allclose(image[0, bar], ramp, atol=0.5 + 1e-3)  # rounded to uint8
    # the label and the scale's end values are drawn (white, antialiased, on black)
    assert image[0, :top].max() > 200 and image[0, bar + 5 :].max() > 200
    wider = map_images.channel_image(weights, "layer1-0-se", min_width=256)
    assert wider.shape[2] == 256  # 64 pixels per channel


def test_channel_gate_maps_are_labelled_strips(tmp_path):
    from keras_attention.layers import SqueezeExcite

    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = SqueezeExcite(reduced_channels=2, name="se")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images, labels = digits(16, 12)
    callback = zoo.train.AttentionMapTensorBoard(str(tmp_path), images[:2])
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0, callbacks=[callback])
    found = _image_summaries(str(tmp_path / "train"))
    assert set(found) == {"attention/se/channels"}
    gate = __import__("keras_attention").attention_map(model, "se", images[:2])
    expected = map_images.channel_image(gate[:, 0, 0, :], "se")
    np.testing.assert_array_equal(found["attention/se/channels"][0][1], expected)
