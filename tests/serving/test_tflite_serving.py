"""`--prefer_tflite_model`: a version folder with `model.tflite` is served by LiteRT with the
same REST and gRPC answers as the SavedModel it was converted from."""

import json
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest

from serving.saved_model import export as export_saved_model
from zoo.cli import export_version


def small_model():
    inputs = keras.Input((8, 6, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="fc")(x), name="small")


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """base/m: 1 SavedModel, 2 model.tflite only, 3 both (same weights, H != W)."""
    keras.utils.set_random_seed(3)
    model = small_model()
    base = tmp_path_factory.mktemp("tflite")
    export_saved_model(model, base, "m", version=1)
    export_version(model, base, "m", format="litert", version=2)
    export_saved_model(model, base, "m", version=3)
    export_version(model, base / "beside", "m", format="litert", version=3)
    (base / "beside" / "m" / "3" / "model.tflite").rename(base / "m" / "3" / "model.tflite")
    return model, base / "m"


def _server(model_dir, prefer_tflite):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.server import Server

    config = text_format.Parse(
        f'model_config_list {{ config {{ name: "m" base_path: "{model_dir}" '
        'model_platform: "tensorflow" model_version_policy { all {} } } }',
        model_server_config_pb2.ModelServerConfig(),
    )
    return Server(
        config,
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0,
        manager_options=dict(prefer_tflite_model=prefer_tflite),
    )


def test_tflite_version_answers_as_the_saved_model_over_rest_and_grpc(versions):
    from serving import Client
    from serving.models import Servable
    from serving.tflite import TfLiteServable

    model, model_dir = versions
    x = np.random.default_rng(0).random((3, 8, 6, 3), dtype=np.float32)
    expected = np.asarray(model.predict(x, verbose=0))
    with _server(model_dir, prefer_tflite=True) as server:
        loaded = server.manager.servables["m"]
        assert [type(loaded[v]) for v in (1, 2, 3)] == [Servable, TfLiteServable, TfLiteServable]
        rest = Client(rest=f"http://127.0.0.1:{server.rest_api_port}")
        grpc = Client(grpc=f"127.0.0.1:{server.port}")
        with rest, grpc:
            answers = {
                (protocol, version): client.predict("m", x, version=version)
                for protocol, client in (("rest", rest), ("grpc", grpc))
                for version in (1, 2, 3)
            }
            for (protocol, version), outputs in answers.items():
                assert list(outputs) == ["output_0"], (protocol, version)
                np.testing.assert_allclose(outputs["output_0"], expected, rtol=1e-5, atol=1e-6)
            for version in (2, 3):  # REST and gRPC agree to the bit on the LiteRT versions
                np.testing.assert_array_equal(
                    answers["rest", version]["output_0"], answers["grpc", version]["output_0"]
                )
            saved = rest.metadata("m", version=1)["metadata"]["signature_def"]["signature_def"]
            for client in (rest, grpc):
                lite = client.metadata("m", version=2)["metadata"]["signature_def"]
                signature = lite["signature_def"]["serving_default"]
                assert signature["method_name"] == "tensorflow/serving/predict"
                assert list(signature["inputs"]) == ["image"]
                assert list(signature["outputs"]) == ["output_0"]
                for side in ("inputs", "outputs"):
                    for key, info in signature[side].items():
                        original = saved["serving_default"][side][key]
                        assert info["dtype"] == original["dtype"] == "DT_FLOAT"
                        assert info["tensor_shape"] == original["tensor_shape"]
                assert client.status("m", version=2) == [
                    {"version": 2, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}
                ]
        # a request of the wrong shape is a 400 naming the problem, not a 500
        url = f"http://127.0.0.1:{server.rest_api_port}/v1/models/m/versions/2:predict"
        body = json.dumps({"instances": [[1.0, 2.0]]}).encode()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(urllib.request.Request(url, body), timeout=30)
        assert error.value.code == 400
        assert "error" in json.loads(error.value.read())


def test_without_the_flag_a_tflite_only_version_does_not_load(versions):
    from serving.models import Servable

    _, model_dir = versions
    with _server(model_dir, prefer_tflite=False) as server:
        loaded = server.manager.servables["m"]
        assert sorted(loaded) == [1, 3]
        assert all(type(servable) is Servable for servable in loaded.values())
        ((version, state, code, message),) = server.manager.status("m", version=2)
        assert (state, code) == ("END", "UNKNOWN")
        assert "saved_model.pb" in message


def test_serve_flag_is_honoured():
    from serving.server import flags_without_effect
    from zoo.cli import build_parser

    args = build_parser().parse_args(["serve", "--model_base_path=/m", "--prefer_tflite_model"])
    assert args.prefer_tflite_model is True
    assert flags_without_effect(args) == []
