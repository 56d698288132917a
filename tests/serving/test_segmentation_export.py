"""A segmentation model exported and served: per-pixel class ids and probabilities from
`serving_default`, class maps at each image's size from the encoded-image signature, over
REST and gRPC, against the in-process prediction."""

import base64
import io
import json
import urllib.request

import keras
import numpy as np
import pytest

from serving import Client
from serving.saved_model import export

INPUT = (12, 16, 3)  # height != width
CLASSES = 5


def segmenter():
    """A couple of convolutions and a per-pixel softmax, as a zoo segmentation model."""
    inputs = keras.Input(INPUT, name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(CLASSES, 3, padding="same")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(x))


def png(array):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_image_maps(model, pngs):
    """In process: decode, stretch to the input (bilinear), scale to [0, 1], predict,
    stretch the probabilities back to the image size, argmax."""
    import tensorflow as tf
    from PIL import Image

    pixels = np.stack(
        [np.asarray(Image.open(io.BytesIO(p)).convert("RGB"), "float32") for p in pngs]
    )
    inputs = tf.image.resize(pixels, INPUT[:2], method="bilinear").numpy() / 255.0
    probabilities = model.predict(inputs, verbose=0)
    back = tf.image.resize(probabilities, pixels.shape[1:3], method="bilinear").numpy()
    return back.argmax(-1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from serving.models import single_model_config
    from serving.server import Server

    keras.utils.set_random_seed(0)
    model = segmenter()
    model.task = "segmentation"  # what a zoo segmentation model carries
    base = tmp_path_factory.mktemp("segmentation_models")
    rng = np.random.default_rng(0)
    batch = rng.random((3, *INPUT)).astype("float32")
    pngs = [png(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)) for _ in range(2)]
    # warmup records of both signatures: the server replays them before serving
    export(
        model, base, "seg", version=1, image_signature=True, warmup_requests=[batch[:1], pngs[:1]]
    )
    with Server(
        single_model_config("seg", str(base / "seg")),
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0,
    ) as server:
        yield server, model, batch, pngs


def test_rest_serving_default_gives_class_ids_and_probabilities(served):
    server, model, batch, _ = served
    body = json.dumps({"instances": batch.tolist()}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_api_port}/v1/models/seg:predict", body
    )
    predictions = json.loads(urllib.request.urlopen(request, timeout=20).read())["predictions"]
    want = model.predict(batch, verbose=0)
    assert np.array([p["class_ids"] for p in predictions]).tolist() == want.argmax(-1).tolist()
    np.testing.assert_allclose([p["probabilities"] for p in predictions], want, atol=1e-5)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_gets_the_in_process_class_maps(served, protocol):
    server, model, batch, pngs = served
    address = f"127.0.0.1:{server.rest_api_port if protocol == 'rest' else server.port}"
    want = model.predict(batch, verbose=0)
    with Client(**{protocol: address}, timeout=20) as client:
        got = client.predict("seg", batch)
        assert got["class_ids"].dtype == np.int32 and got["class_ids"].shape == (3, 12, 16)
        np.testing.assert_array_equal(got["class_ids"], want.argmax(-1))
        np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)
        # encoded images: the class map at each image's own size (10 x 14)
        maps = client.predict("seg", pngs, signature_name="serving_images")
        assert sorted(maps) == ["class_ids"] and maps["class_ids"].shape == (2, 10, 14)
        np.testing.assert_array_equal(maps["class_ids"], expected_image_maps(model, pngs))
        other_size = png(np.zeros((9, 9, 3), np.uint8))
        with pytest.raises(Exception) as info:
            client.predict("seg", [pngs[0], other_size], signature_name="serving_images")
        assert info.value.code == "INVALID_ARGUMENT"
        assert "same height and width" in str(info.value)
        signature = client.metadata("seg")["metadata"]["signature_def"]["signature_def"]
        assert signature["serving_default"]["outputs"]["class_ids"]["dtype"] == "DT_INT32"


def test_rest_b64_images(served):
    server, model, _, pngs = served
    body = {
        "signature_name": "serving_images",
        "instances": [{"b64": base64.b64encode(p).decode()} for p in pngs],
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_api_port}/v1/models/seg:predict", json.dumps(body).encode()
    )
    predictions = json.loads(urllib.request.urlopen(request, timeout=20).read())["predictions"]
    np.testing.assert_array_equal(np.array(predictions), expected_image_maps(model, pngs))


def test_explicit_task_and_refusals(tmp_path):
    import tensorflow as tf

    model = segmenter()  # no task attribute: the argument decides
    path = export(model, tmp_path, "explicit", task="segmentation")
    loaded = tf.saved_model.load(path).signatures["serving_default"]
    assert sorted(loaded.structured_outputs) == ["class_ids", "probabilities"]
    plain = export(model, tmp_path, "plain")  # without it: a model like any other
    assert list(tf.saved_model.load(plain).signatures["serving_default"].structured_outputs) == [
        "output_0"
    ]
    with pytest.raises(ValueError, match="task must be 'classification' or 'segmentation'"):
        export(model, tmp_path, "m", task="detection")
    with pytest.raises(ValueError, match="decode is not supported for a segmentation model"):
        export(
            model, tmp_path, "m", task="segmentation", image_signature=dict(decode=tf.io.decode_png)
        )
    inputs = keras.Input((8, 8, 3))
    classifier = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match=r"must be \(batch, height, width, classes\)"):
        export(classifier, tmp_path, "m", task="segmentation")
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
