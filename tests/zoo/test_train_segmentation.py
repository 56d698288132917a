"""The segmentation recipe (zoo.train.segmentation): mean IoU against a hand-computed
confusion matrix and keras.metrics.MeanIoU, its bootstrap standard error against the closed
form of two scenes, the auxiliary loss weight, one short epoch."""

import keras
import numpy as np
import pytest

from zoo import scenes
from zoo.train import segmentation


def tiny_segmenter(shape=(48, 56, 3), num_classes=11, aux=False):
    """A couple of convolutions and a per-pixel softmax: the shape of a zoo segmentation
    model (input size in, class probabilities at the input size out)."""
    inputs = keras.Input(shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    main = keras.layers.Conv2D(num_classes, 1, activation="softmax", name="main")(x)
    if not aux:
        return keras.Model(inputs, main)
    side = keras.layers.Conv2D(num_classes, 1, activation="softmax", name="aux")(x)
    return keras.Model(inputs, [main, side])


LABELS = np.array([[0, 0, 1, 1], [2, 2, 1, 0], [0, 3, 3, 3]])
PREDICTIONS = np.array([[0, 1, 1, 1], [2, 0, 1, 0], [0, 3, 2, 3]])


def test_confusion_matrix_and_mean_iou_by_hand():
    confusion = segmentation.confusion_matrix(LABELS, PREDICTIONS, num_classes=5)
    # rows: true class, columns: predicted class (counted by hand from the arrays above)
    by_hand = np.zeros((5, 5), np.int64)
    by_hand[0, 0], by_hand[0, 1] = 3, 1
    by_hand[1, 1] = 3
    by_hand[2, 2], by_hand[2, 0] = 1, 1
    by_hand[3, 3], by_hand[3, 2] = 2, 1
    np.testing.assert_array_equal(confusion, by_hand)
    # IoU = TP / (row + column - TP); class 4 never occurs: skipped in the mean
    iou = segmentation.class_iou(confusion)
    np.testing.assert_allclose(iou[:4], [3 / 5, 3 / 4, 1 / 3, 2 / 3])
    assert np.isnan(iou[4])
    assert segmentation.mean_iou(confusion) == pytest.approx((3 / 5 + 3 / 4 + 1 / 3 + 2 / 3) / 4)
    metric = keras.metrics.MeanIoU(num_classes=5)
    metric.update_state(LABELS.reshape(-1), PREDICTIONS.reshape(-1))
    assert float(metric.result()) == pytest.approx(segmentation.mean_iou(confusion), rel=1e-6)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        segmentation.confusion_matrix(LABELS, PREDICTIONS, num_classes=3)


def test_bootstrap_standard_error_of_two_scenes_against_its_closed_form():
    # resampling two scenes gives AA, AB or BA, BB with probabilities 1/4, 1/2, 1/4: the
    # mean IoU of A's confusion, of both summed, of B's
    first = (LABELS, PREDICTIONS)
    second = (np.array([[0, 0, 0, 1], [1, 1, 4, 4], [4, 2, 2, 0]]), np.zeros((3, 4), int))
    labels, predictions = np.stack([first[0], second[0]]), np.stack([first[1], second[1]])

    def miou(*scenes):
        return segmentation.mean_iou(
            sum(segmentation.confusion_matrix(labels[i], predictions[i], 5) for i in scenes)
        )

    values, chances = np.array([miou(0), miou(0, 1), miou(1)]), np.array([0.25, 0.5, 0.25])
    closed_form = np.sqrt(chances @ values**2 - (chances @ values) ** 2)
    estimate = segmentation.bootstrap_standard_error(labels, predictions, 5, samples=20000)
    assert estimate == pytest.approx(closed_form, rel=0.03)
    same = np.stack([LABELS] * 3), np.stack([PREDICTIONS] * 3)
    assert segmentation.bootstrap_standard_error(*same, num_classes=5) == pytest.approx(
        0, abs=1e-12
    )


def test_compiled_metric_and_the_auxiliary_loss_weight():
    keras.utils.set_random_seed(1)
    model = tiny_segmenter(shape=(8, 12, 3), num_classes=4, aux=True)
    segmentation.compile_segmentation(model, aux_weight=0.25, num_classes=4)
    x = np.random.default_rng(0).random((3, 8, 12, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 4, (3, 8, 12)).astype("int32")
    logs = model.evaluate(x, (y, y), batch_size=3, return_dict=True, verbose=0)
    main, side = (np.asarray(p, np.float64) for p in model.predict(x, verbose=0))

    def cross_entropy(probabilities):
        picked = np.take_along_axis(probabilities, y[..., None].astype(int), -1)
        return -np.log(picked).mean()

    assert logs["loss"] == pytest.approx(cross_entropy(main) + 0.25 * cross_entropy(side), 1e-5)
    confusion = segmentation.confusion_matrix(y, main.argmax(-1), 4)
    assert logs["main_mean_iou"] == pytest.approx(segmentation.mean_iou(confusion), rel=1e-5)
    loss = segmentation.PixelCrossEntropy(4)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, segmentation.PixelCrossEntropy) and again.num_classes == 4
    assert float(again(y, main)) == pytest.approx(cross_entropy(main), rel=1e-5)
    weighted = segmentation.PixelCrossEntropy(4, class_weights=[0.1, 1.0, 2.0, 3.0])
    picked = -np.log(np.take_along_axis(main, y[..., None].astype(int), -1))[..., 0]
    by_hand = (picked * np.array([0.1, 1.0, 2.0, 3.0])[y]).mean()
    assert float(weighted(y, main)) == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(ValueError, match="class_weights must be 4 numbers >= 0"):
        segmentation.PixelCrossEntropy(4, class_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="aux_weight must be a number >= 0"):
        segmentation.compile_segmentation(model, aux_weight=-1)


def test_one_short_epoch_on_digit_scenes():
    keras.utils.set_random_seed(0)
    model = tiny_segmenter()
    scene_kwargs = dict(size=(48, 56), num_scenes=16)
    model, history, result = segmentation.fit_segmentation(
        model,
        epochs=2,
        batch_size=8,
        scene_kwargs=scene_kwargs,
        num_test_scenes=6,
        verbose=0,
    )
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))
    assert result["steps_per_epoch"] == 2 and result["batch_size"] == 8
    # the evaluation is the held-out scenes' confusion, recomputed here
    images, labels, _ = scenes.digit_scenes("test", num_scenes=6, size=(48, 56), seed=0)
    predicted = model.predict(images, verbose=0).argmax(-1)
    confusion = segmentation.confusion_matrix(labels, predicted)
    np.testing.assert_array_equal(result["confusion"], confusion)
    assert result["mean_iou"] == pytest.approx(segmentation.mean_iou(confusion))
    assert result["pixel_accuracy"] == pytest.approx((predicted == labels).mean())
    standard_error = segmentation.bootstrap_standard_error(labels, predicted)
    assert result["mean_iou_standard_error"] == standard_error
    with pytest.raises(ValueError, match=r"takes \(64, 64, 3\) inputs but the scenes are"):
        segmentation.fit_segmentation(
            tiny_segmenter((64, 64, 3)), epochs=1, scene_kwargs=scene_kwargs, verbose=0
        )
