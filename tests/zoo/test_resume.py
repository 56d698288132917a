"""Fault tolerance: a training run SIGKILLed mid-epoch and restarted with the same run
folder finishes with the weights of an uninterrupted run with the same seed.

How equality is reached: `zoo.train.fit` backs up weights *and optimizer state* every
`checkpoint_every` steps (and at epoch ends) with `StepBackupAndRestore`; on restart it
reads the global step from the restored optimizer, finishes the interrupted epoch from
exactly that step, then runs the remaining epochs. The batches (order and augmentation) are
functions of (seed, step), so the resumed run sees what the uninterrupted one saw. Keras'
own `BackupAndRestore` alone would replay the interrupted epoch from its first batch on top
of the mid-epoch weights (it restores only the epoch number), which cannot match.

Each run is a subprocess (a SIGKILL must not take the test process with it).
"""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = textwrap.dedent("""
    import os, signal, sys, json
    sys.path.insert(0, {repo!r})
    import numpy as np
    import keras
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    import zoo
    import zoo.train
    from keras_attention.layers import SqueezeExcite

    def small_model(input_shape, num_classes):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = SqueezeExcite(name="se")(x)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes, dtype="float32")(x))

    class KillAt(keras.callbacks.Callback):
        # SIGKILL ourselves right after global step `step` (no cleanup, like a preemption)
        def __init__(self, step):
            super().__init__()
            self.step = step
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    images, labels = zoo.datasets.mnist_subset("test")
    data = (images[:96], labels[:96])
    kill = int(os.environ.get("ZOO_TEST_KILL_AT_STEP", "0"))
    recipe = zoo.train.Recipe(optimizer="adamw", learning_rate=0.01, warmup_epochs=1,
                              label_smoothing=0.1, crop_padding=0.15, flip=True)
    model, history = zoo.train.fit(
        small_model, data, epochs=3, batch_size=16, seed=5, recipe=recipe,
        run_dir=sys.argv[1], checkpoint_every=4, verbose=0,
        callbacks=[KillAt(kill)] if kill else [])
    np.savez(sys.argv[2], *[np.asarray(w) for w in model.weights])
    print("RUN", json.dumps({{"resumed": history.run["resumed_from_step"],
                             "steps": history.run["steps"],
                             "epochs": len(history.history["loss"])}}))
""")


def _run(script, run_dir, out, backend, kill_at=None):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("ZOO_TEST_KILL_AT_STEP", None)
    if kill_at:
        env["ZOO_TEST_KILL_AT_STEP"] = str(kill_at)
    return subprocess.run(
        [sys.executable, str(script), str(run_dir), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def _summary(done):
    import json

    line = [l for l in done.stdout.splitlines() if l.startswith("RUN ")]
    assert line, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(line[-1][4:])


def _resume_matches_uninterrupted(tmp_path, backend):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=REPO))
    # 96 examples / 16 = 6 steps per epoch, 18 in all; backups at steps 4, 6 (epoch end),
    # 8, 12, ...; killed after step 10 (epoch 2, batch 4 of 6): resumes at step 8.
    reference = _run(script, tmp_path / "ref", tmp_path / "ref.npz", backend)
    assert _summary(reference) == {"resumed": 0, "steps": 18, "epochs": 3}

    killed = _run(script, tmp_path / "run", tmp_path / "unused.npz", backend, kill_at=10)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "unused.npz").exists()
    assert (tmp_path / "run" / "backup" / "latest.weights.h5").is_file()

    resumed = _run(script, tmp_path / "run", tmp_path / "resumed.npz", backend)
    summary = _summary(resumed)
    assert summary["resumed"] == 8 and summary["steps"] == 10, summary
    assert summary["epochs"] == 2  # the rest of epoch 2, then epoch 3
    assert not (tmp_path / "run" / "backup").exists()

    with np.load(tmp_path / "ref.npz") as ref, np.load(tmp_path / "resumed.npz") as got:
        assert len(ref.files) == len(got.files) > 10
        for key in ref.files:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # and resuming mattered: the weights moved after the backup the restart began from
    with np.load(tmp_path / "ref.npz") as ref:
        assert any(np.abs(ref[k]).sum() > 0 for k in ref.files)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_tf(tmp_path):
    pytest.importorskip("tensorflow")
    _resume_matches_uninterrupted(tmp_path, "tensorflow")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_jax(tmp_path):
    pytest.importorskip("jax")
    _resume_matches_uninterrupted(tmp_path, "jax")


def test_torn_backup_falls_back_to_the_previous_consistent_pair(tmp_path):
    """A kill between writing the weights and their metadata leaves a newer weights file
    beside stale metadata: restore notices (size / mtime recorded in the metadata) and
    resumes from the previous pair instead of pairing new weights with an old step."""
    import time

    import keras

    import zoo.train
    from tests.zoo.test_train import digits, tiny_cnn
    from zoo.train.callbacks import StepBackupAndRestore

    model, _ = zoo.train.fit(tiny_cnn, digits(16, 12), epochs=1, batch_size=8, verbose=0)
    backup = StepBackupAndRestore(str(tmp_path / "backup"), save_freq=2)
    backup.set_model(model)
    backup.global_step = 5
    backup.save()
    saved = [np.array(w) for w in model.weights]
    model.trainable_weights[0].assign(model.trainable_weights[0] + 1.0)
    backup.global_step = 7
    backup.save()
    assert StepBackupAndRestore(str(tmp_path / "backup")).restore(model) == 7
    time.sleep(0.01)
    model.trainable_weights[0].assign(model.trainable_weights[0] + 1.0)
    model.save_weights(backup.weights_path, overwrite=True)  # torn: metadata still says 7
    assert StepBackupAndRestore(str(tmp_path / "backup")).restore(model) == 5
    for a, b in zip(saved, model.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
