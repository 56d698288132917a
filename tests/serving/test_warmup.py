"""Warmup records: written by `serving.export`, replayed at load before a version is served."""

import os
import shutil

import keras
import numpy as np
import pytest

from serving.saved_model import export
from tests.serving.conftest import tfs_testdata
from tests.serving.test_monitoring import sample, scrape
from tests.serving.test_rest import call_json

WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")
HALF_PLUS_TWO_PATH = "saved_model_half_plus_two_cpu"


def image_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    hidden = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))


def png_bytes(seed=0):
    import tensorflow as tf

    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def read_logs(path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for raw in tf.data.TFRecordDataset(str(path)):
        record = prediction_log_pb2.PredictionLog()
        record.ParseFromString(raw.numpy())
        logs.append(record)
    return logs


def predict_log(model_name, signature_name, inputs):
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name),
        inputs=inputs,
    )
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def test_export_writes_warmup_records_exactly(tmp_path):
    import tensorflow as tf

    model = image_model()
    x = np.random.default_rng(1).random((2, 8, 8, 3))  # float64: converted to the input's float32
    y = np.random.default_rng(2).random((1, 8, 8, 3)).astype(np.float32)
    png = png_bytes()
    trailing_nul = b"GIF89a\x00\x00"  # written as is (numpy's 'S' dtype would drop the NULs)
    path = export(
        model,
        tmp_path,
        "m",
        image_signature=True,
        warmup_requests=[
            x,
            {"image": y},
            [png],
            {"signature_name": "serving_images", "inputs": {"images": [png, trailing_nul]}},
            {"signature_name": "serving_default", "inputs": y.tolist()},
        ],
    )
    assert sorted(os.listdir(tmp_path / "m")) == ["1"]  # nothing else left behind
    logs = read_logs(os.path.join(path, WARMUP))
    expected = [
        predict_log("m", "serving_default", {"image": tf.make_tensor_proto(x.astype(np.float32))}),
        predict_log("m", "serving_default", {"image": tf.make_tensor_proto(y)}),
        predict_log(
            "m", "serving_images", {"images": tf.make_tensor_proto([png], dtype=tf.string)}
        ),
        predict_log(
            "m",
            "serving_images",
            {"images": tf.make_tensor_proto([png, trailing_nul], dtype=tf.string)},
        ),
        predict_log("m", "serving_default", {"image": tf.make_tensor_proto(y)}),
    ]
    assert logs == expected
    assert logs[3].predict_log.request.inputs["images"].string_val[1] == trailing_nul
    np.testing.assert_array_equal(
        tf.make_ndarray(logs[0].predict_log.request.inputs["image"]), x.astype(np.float32)
    )
    assert logs[0].predict_log.request.inputs["image"].dtype == 1  # DT_FLOAT

    # a ready PredictionLog goes in unchanged; without warmup_requests there is no file
    from tensorflow_serving.apis import prediction_log_pb2

    regress = prediction_log_pb2.PredictionLog()
    regress.regress_log.request.model_spec.name = "m"
    path = export(model, tmp_path, "m", warmup_requests=[regress])
    assert read_logs(os.path.join(path, WARMUP)) == [regress]
    assert not os.path.exists(os.path.join(export(model, tmp_path, "m"), "assets.extra"))


def test_export_rejects_bad_warmup_requests(tmp_path):
    model = image_model()
    x = np.zeros((1, 8, 8, 3), np.float32)
    cases = [
        (
            [x] * 1001,
            "warmup_requests has 1001 requests; TF Serving reads at most 1000 warmup records",
        ),
        (x, "warmup_requests must be a list of requests"),
        (
            [{"pixels": x}],
            r"warmup_requests\[0\]: signature 'serving_default' takes inputs \['image'\], "
            r"got \['pixels'\]",
        ),
        (
            [x, np.zeros((1, 4, 4, 3))],
            r"warmup_requests\[1\]\['image'\]: shape \(1, 4, 4, 3\) does not fit the "
            r"signature input shape \(None, 8, 8, 3\)",
        ),
        ([[png_bytes()]], r"warmup_requests\[0\]: encoded images need the image signature"),
        ([{"signature_name": "nope", "inputs": x}], r"no signature 'nope' in the export"),
        ([{"signature_name": "serving_default", "image": x}], "takes exactly the keys"),
        ([np.array([["a"] * 3] * 8)], r"cannot convert to float32"),
    ]
    for requests, message in cases:
        with pytest.raises(ValueError, match=message):
            export(model, tmp_path, "m", warmup_requests=requests)
    assert (
        not (tmp_path / "m").exists() or os.listdir(tmp_path / "m") == []
    )  # no version, no temp folder
    # exactly 1000 is allowed
    path = export(model, tmp_path, "m", warmup_requests=[x] * 1000)
    assert len(read_logs(os.path.join(path, WARMUP))) == 1000


def test_server_replays_warmup_before_available(tmp_path, monkeypatch):
    from serving import warmup
    from serving.errors import ServingError
    from serving.metrics import read_monitoring_path
    from serving.models import Servable, single_model_config
    from serving.server import Server

    model = image_model()
    rng = np.random.default_rng(3)
    requests = [rng.random((n, 8, 8, 3)).astype(np.float32) for n in (1, 2, 4)] + [
        [png_bytes(), png_bytes(1)]
    ]
    path = export(model, tmp_path, "m", image_signature=True, warmup_requests=requests)

    server = Server(
        single_model_config("m", str(tmp_path / "m")),
        rest_api_port=0,
        port=None,
        host="127.0.0.1",
        poll_wait_seconds=0,
        monitoring_path=read_monitoring_path(tfs_testdata("monitoring_config.txt")),
    )
    seen, runs = [], []
    original_replay, original_run = warmup.replay, Servable.run

    def spy_replay(servable, record):
        # while records replay, the version is LOADING and requests cannot reach it
        state = server.manager.states["m"][1]
        try:
            server.manager.resolve("m")
            reachable = True
        except ServingError as error:
            reachable = error.code
        seen.append((record.predict_log.request.model_spec.signature_name, state, reachable))
        return original_replay(servable, record)

    def spy_run(self, signature, feeds, output_names=None, key=None):
        runs.append((key, {n: np.asarray(v).shape for n, v in feeds.items()}))
        return original_run(self, signature, feeds, output_names, key)

    monkeypatch.setattr(warmup, "replay", spy_replay)
    monkeypatch.setattr(Servable, "run", spy_run)
    with server:
        loading = ("LOADING", "OK", "")
        assert seen == [("serving_default", loading, "NOT_FOUND")] * 3 + [
            ("serving_images", loading, "NOT_FOUND")
        ]
        assert runs == [("serving_default", {"image": (n, 8, 8, 3)}) for n in (1, 2, 4)] + [
            ("serving_images", {"images": (2,)})
        ]
        assert server.manager.servables["m"][1].warmup_records == 4
        assert call_json(server, "/v1/models/m") == (
            200,
            {
                "model_version_status": [
                    {
                        "version": "1",
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            },
        )
        status, body = call_json(
            server, "/v1/models/m:predict", {"instances": requests[0].tolist()}
        )
        assert status == 200
        np.testing.assert_allclose(
            body["predictions"], model.predict(requests[0], verbose=0), rtol=1e-5
        )
        text = scrape(server)
        assert "# TYPE :tensorflow:serving:model_warmup_latency histogram" in text
        latency = ":tensorflow:serving:model_warmup_latency"
        assert sample(text, latency + "_count", model_path=path, status="OK") == 1
        assert sample(text, latency + "_bucket", model_path=path, status="OK", le="+Inf") == 1
        assert sample(text, latency + "_sum", model_path=path, status="OK") > 0


def copy_half_plus_two(tmp_path):
    """TF Serving's half_plus_two test model, copied so a warmup file can be added."""
    base = tmp_path / "hp"
    shutil.copytree(tfs_testdata(HALF_PLUS_TWO_PATH), base)
    version = base / "00000123"
    (version / "assets.extra").mkdir()
    return base, version / WARMUP


def write_records(path, records):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())


def examples_log(kind, signature_name, values=(2.0, 3.0)):
    from tensorflow_serving.apis import prediction_log_pb2

    record = prediction_log_pb2.PredictionLog()
    request = getattr(record, kind).request
    request.model_spec.name = "hp"
    request.model_spec.signature_name = signature_name
    for value in values:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(
            value
        )
    return record


def x_log(values=(2.0,), alias="x"):
    import tensorflow as tf

    return predict_log("hp", "", {alias: tf.make_tensor_proto(np.asarray(values, np.float32))})


def load(base):
    from serving.models import ModelManager, single_model_config

    manager = ModelManager(single_model_config("hp", str(base)))
    manager.poll()
    return manager


def test_classify_regress_and_multi_inference_records_replay(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    base, path = copy_half_plus_two(tmp_path)
    multi = prediction_log_pb2.PredictionLog()
    request = multi.multi_inference_log.request
    for signature, method in (("classify_x_to_y", "classify"), ("regress_x_to_y", "regress")):
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = "hp", signature
        task.method_name = f"tensorflow/serving/{method}"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    metadata_only = prediction_log_pb2.PredictionLog()
    metadata_only.log_metadata.model_spec.name = "hp"  # no request: skipped, like the real server
    write_records(
        path,
        [
            x_log(),
            examples_log("classify_log", "classify_x_to_y"),
            examples_log("regress_log", "regress_x_to_y"),
            multi,
            metadata_only,
        ],
    )
    manager = load(base)
    try:
        assert manager.status("hp") == [(123, "AVAILABLE", "OK", "")]
        assert manager.servables["hp"][123].warmup_records == 5
    finally:
        manager.close()


def regress_x_to_y_text():
    from google.protobuf import text_format
    from tensorflow.python.saved_model import loader_impl

    saved = loader_impl.parse_saved_model(
        str(tfs_testdata("saved_model_half_plus_two_cpu") / "00000123")
    )
    return text_format.MessageToString(saved.meta_graphs[0].signature_def["regress_x_to_y"])


def failing_cases(path):
    from tensorflow_serving.apis import prediction_log_pb2

    session_run = prediction_log_pb2.PredictionLog()
    session_run.session_run_log.request.feed.add().name = "x"
    return {
        "wrong input": (
            [x_log(alias="y")],
            "INVALID_ARGUMENT",
            "input size does not match signature: 1!=1 len({y}) != len({x}). Sent extra: {y}. "
            "Missing but required: {x}.",
        ),
        "wrong signature": (
            [examples_log("regress_log", "nope")],
            "FAILED_PRECONDITION",
            'Serving signature key "nope" not found.',
        ),
        # TF Serving's message without --enable_signature_method_name_check
        "classify on a regress signature": (
            [x_log(), examples_log("classify_log", "regress_x_to_y")],
            "INVALID_ARGUMENT",
            "Expected classification signature outputs to contain at least one of "
            '"classes" or "scores". '
            f"Signature was: {regress_x_to_y_text()}"[:1024],
        ),
        "session_run_log": ([session_run], "UNIMPLEMENTED", "Unsupported log_type for warmup: 5"),
        "not a PredictionLog": (
            [b"\xff\xff\xff"],
            "INVALID_ARGUMENT",
            f"Failed to parse warmup record: \ufffd\ufffd\ufffd from {path}",
        ),
        "too many records": (
            [x_log()] * 1001,
            "INVALID_ARGUMENT",
            f"Number of warmup records exceeds the maximum (1000) at {path}",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong input",
        "wrong signature",
        "classify on a regress signature",
        "session_run_log",
        "not a PredictionLog",
        "too many records",
    ],
)
def test_failing_record_fails_the_load(tmp_path, case):
    from serving.errors import ServingError

    base, path = copy_half_plus_two(tmp_path)
    records, code, message = failing_cases(path)[case]
    write_records(path, records)
    manager = load(base)
    try:
        assert manager.status("hp") == [(123, "END", code, message)]
        assert manager.servables["hp"] == {}
        with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(hp\)"):
            manager.resolve("hp")
    finally:
        manager.close()


def test_exactly_1000_records_load(tmp_path):
    base, path = copy_half_plus_two(tmp_path)
    write_records(path, [x_log()] * 1000)
    manager = load(base)
    try:
        assert manager.status("hp") == [(123, "AVAILABLE", "OK", "")]
        assert manager.servables["hp"][123].warmup_records == 1000
    finally:
        manager.close()


def test_malformed_warmup_file_is_reported_and_never_served(tmp_path):
    import grpc

    from serving import Client
    from serving.metrics import read_monitoring_path
    from serving.models import single_model_config
    from serving.server import Server

    base, path = copy_half_plus_two(tmp_path)
    path.write_bytes(b"this is not a TFRecord file, it is plain text")
    server = Server(
        single_model_config("hp", str(base)),
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0,
        monitoring_path=read_monitoring_path(tfs_testdata("monitoring_config.txt")),
    )
    with server:
        status, body = call_json(server, "/v1/models/hp")
        assert status == 200
        [entry] = body["model_version_status"]
        assert (entry["version"], entry["state"], entry["status"]["error_code"]) == (
            "123",
            "END",
            "DATA_LOSS",
        )
        message = entry["status"]["error_message"]
        assert message.endswith(". Please verify your warmup data is in TFRecord format.")
        assert call_json(server, "/v1/models/hp:predict", {"instances": [2.0]}) == (
            404,
            {"error": "Servable not found for request: Latest(hp)"},
        )
        client = Client(grpc=f"127.0.0.1:{server.port}", timeout=20, retries=0)
        try:
            with pytest.raises(Exception) as info:
                client.predict("hp", [2.0])
            assert info.value.code == "NOT_FOUND"
            assert info.value.message == "Servable not found for request: Latest(hp)"
            from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                    get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "hp"}),
                    timeout=20,
                )
            [version] = reply.model_version_status
            assert (
                version.version,
                version.state,
                version.status.error_code,
                version.status.error_message,
            ) == (123, get_model_status_pb2.ModelVersionStatus.END, 15, message)  # 15: DATA_LOSS
        finally:
            client.close()
        text = scrape(server)
        version_path = str(base / "00000123")
        assert (
            sample(
                text,
                ":tensorflow:serving:model_warmup_latency_count",
                model_path=version_path,
                status=f"DATA_LOSS: {message}",
            )
            == 1
        )
