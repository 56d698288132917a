"""The encoded-image signature: PNG/JPEG bytes in, probabilities and top-k out, over REST and
gRPC."""

import base64
import io
import json
import urllib.request

import keras
import numpy as np
import pytest

from serving import Client
from serving.saved_model import export


def image_model():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))


def encode(array, fmt):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def expected(model, pngs):
    import tensorflow as tf
    from PIL import Image

    pixels = np.stack(
        [np.asarray(Image.open(io.BytesIO(p)).convert("RGB"), np.float32) for p in pngs]
    )
    resized = tf.image.resize(pixels, (8, 8), method="bilinear").numpy()
    return model.predict(resized / 255.0, verbose=0)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from serving.models import single_model_config
    from serving.server import Server

    keras.utils.set_random_seed(0)
    model = image_model()
    base = tmp_path_factory.mktemp("image_models")
    export(model, base, "img", version=1, image_signature=dict(top_k=3))
    rng = np.random.default_rng(0)
    pngs = [encode(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), "PNG") for _ in range(3)]
    with Server(
        single_model_config("img", str(base / "img")),
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0,
    ) as server:
        yield server, model, pngs


def test_rest_b64_matches_in_process_model(served):
    server, model, pngs = served
    body = {
        "signature_name": "serving_images",
        "instances": [{"b64": base64.b64encode(p).decode()} for p in pngs],
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_api_port}/v1/models/img:predict", json.dumps(body).encode()
    )
    predictions = json.loads(urllib.request.urlopen(request, timeout=20).read())["predictions"]
    want = expected(model, pngs)
    got = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert [p["classes"] for p in predictions] == np.argsort(-want, axis=1)[:, :3].tolist()
    np.testing.assert_allclose(
        [p["scores"] for p in predictions], np.sort(want, axis=1)[:, ::-1][:, :3], atol=1e-5
    )


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_sends_image_bytes(served, protocol):
    server, model, pngs = served
    address = f"127.0.0.1:{server.rest_api_port if protocol == 'rest' else server.port}"
    with Client(**{protocol: address}, timeout=20) as client:
        got = client.predict("img", pngs, signature_name="serving_images")
        assert got["probabilities"].dtype == np.float32 and got["classes"].shape == (3, 3)
        np.testing.assert_allclose(got["probabilities"], expected(model, pngs), atol=1e-5)
        one = client.predict(
            "img", pngs[0], signature_name="serving_images"
        )  # one image: a batch of one
        np.testing.assert_allclose(one["probabilities"], got["probabilities"][:1], atol=1e-6)
        jpeg = encode(np.full((8, 8, 3), 200, np.uint8), "JPEG")
        assert client.predict("img", [jpeg], signature_name="serving_images")[
            "probabilities"
        ].shape == (1, 5)
        with pytest.raises(Exception) as info:
            client.predict("img", [b"not an image"], signature_name="serving_images")
        assert info.value.code == "INVALID_ARGUMENT"
        meta = client.metadata("img")["metadata"]["signature_def"]["signature_def"][
            "serving_images"
        ]
        assert meta["inputs"]["images"]["dtype"] == "DT_STRING"
        assert meta["inputs"]["images"]["tensor_shape"]["dim"][0]["size"] == "-1"


def test_image_signature_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown image_signature options"):
        export(image_model(), tmp_path, "m", image_signature=dict(size=3))
    with pytest.raises(ValueError, match="height=9 but the model input has 8"):
        export(image_model(), tmp_path, "m", image_signature=dict(height=9))
    inputs = keras.Input((4,), name="x")
    with pytest.raises(ValueError, match="image input"):
        export(
            keras.Model(inputs, keras.layers.Dense(2)(inputs)), tmp_path, "m", image_signature=True
        )
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
