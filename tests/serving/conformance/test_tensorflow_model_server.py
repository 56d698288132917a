"""TensorFlow Serving's own model-server integration tests, run against this server.

Ported from tensorflow/serving at commit 9d981c5c2708d23c5407c7c1e30309e6f9798874:
`tensorflow_serving/model_servers/tensorflow_model_server_test.py` (the cases, same names) and
its base class `model_servers/test_util/tensorflow_model_server_test_base.py` (`run_server`,
`verify_predict_request`, `sorted_object`). Expected values, versions, status codes and
message substrings are the originals'.

Each case starts a server with the command line the base class's `RunServer` gives the real
binary: `--port`, `--rest_api_port`, `--rest_api_timeout_in_ms=5000`, `--grpc_socket_path`,
`--grpc_channel_arguments=<case's>,grpc.so_reuseaddr=1`, then `--model_config_file` or
`--model_name`/`--model_base_path`, `--monitoring_config_file`,
`--model_config_file_poll_wait_seconds`. Like the original, one server is started per distinct
command line and shared by the cases that give the same one. They run in this process, parsed
by the `serve` command's own parser and built by `server_from_args`, exactly as `serve` builds
them; the case that reads the process's stderr (testBadModelConfig) runs the `serve` command
as a subprocess. Differences, none in what is asserted: ports are chosen by the server (`0`)
rather than portpicker, the servers listen on 127.0.0.1 (`--grpc_host`, `--rest_api_host`),
and the Unix socket lives in a temporary folder rather than at `/tmp/tf-serving.sock`.

Counts: 30 cases in the original; 26 ported (all pass), 4 not applicable:
- testPredictOnTfLite, testPredictWithSignatureDefOnTfLite: TF Lite models
  (`saved_model_half_plus_two_tflite*`) are not in the testdata (`--prefer_tflite_model` is
  honoured: tests/serving/test_tflite_serving.py serves `.tflite` files exported here).
- test_profiler_service_with_valid_trace_request: the TensorFlow profiler gRPC service is
  part of the binary (`--enable_profiler` is accepted and has no effect).
- test_tf_text: its model (`tf_text_regression`) and the TF Text ops are not in the testdata.
The original's `_TestBadModel` / `_TestBadModelUpconvertedSavedModel` are helpers that its
runner never collects (leading underscore, and `bad_half_plus_two` is not in the testdata).

Model builds adapted to Keras 3 / TF 2.21 (the server side is unchanged): `tf.saved_model.
experimental.save` is `tf.saved_model.save`; the Keras Sequential cases save with a signature
naming the input `x` and the output `y`, the names Keras 2's export gave and the case sends
and reads (Keras 3's own export names them `inputs` and `output_0`).
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from tests.serving.conftest import REPO, tfs_testdata

RPC_TIMEOUT = 20.0
HTTP_REST_TIMEOUT_MS = 5000
DEFAULT_SIGNATURE = "serving_default"

_servers = {}  # args key -> Server, like the base class's model_servers_dict


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    yield tmp_path_factory.mktemp("tfms")
    for server in _servers.values():
        server.stop()
    _servers.clear()


def command_line(
    work_dir,
    model_name,
    model_path,
    model_config_file=None,
    monitoring_config_file=None,
    batching_parameters_file=None,
    grpc_channel_arguments="",
    model_config_file_poll_period=None,
):
    """The flags `RunServer` passes to tensorflow_model_server."""
    flags = [
        "--port=0",
        "--rest_api_port=0",
        f"--rest_api_timeout_in_ms={HTTP_REST_TIMEOUT_MS}",
        f"--grpc_socket_path={work_dir / 'tf-serving.sock'}",
        "--grpc_host=127.0.0.1",
        "--rest_api_host=127.0.0.1",
    ]
    if model_config_file:
        flags.append(f"--model_config_file={model_config_file}")
    elif model_path:
        flags += [f"--model_name={model_name}", f"--model_base_path={model_path}"]
    else:
        raise ValueError("Both model_config_file and model_path cannot be empty!")
    if monitoring_config_file:
        flags.append(f"--monitoring_config_file={monitoring_config_file}")
    if model_config_file_poll_period is not None:
        flags.append(f"--model_config_file_poll_wait_seconds={model_config_file_poll_period}")
    if batching_parameters_file:
        flags += ["--enable_batching", f"--batching_parameters_file={batching_parameters_file}"]
    flags.append(
        "--grpc_channel_arguments="
        + ",".join(a for a in [grpc_channel_arguments, "grpc.so_reuseaddr=1"] if a)
    )
    return flags


def run_server(work_dir, model_name, model_path, **options):
    """(server, grpc host:port, rest host:port); one server per distinct command line. A
    second server of the module takes its own socket path (a socket file serves one server)."""
    key = (model_name, str(model_path)) + tuple(sorted((k, str(v)) for k, v in options.items()))
    if key not in _servers:
        from serving.server import server_from_args
        from zoo.cli import build_parser

        flags = command_line(work_dir, model_name, model_path, **options)
        flags = [f.replace("tf-serving.sock", f"tf-serving-{len(_servers)}.sock") for f in flags]
        server = server_from_args(build_parser().parse_args(["serve", *flags]), poll_wait_seconds=1)
        _servers[key] = server.start()
    server = _servers[key]
    return server, f"127.0.0.1:{server.port}", f"127.0.0.1:{server.rest_api_port}"


def call_rest(url, req):
    data = json.dumps(req).encode("utf-8") if req is not None else None
    with urllib.request.urlopen(
        urllib.request.Request(url, data=data), timeout=RPC_TIMEOUT
    ) as resp:
        return resp.read()


def sorted_object(obj):
    if isinstance(obj, dict):
        return sorted((k, sorted_object(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return sorted(sorted_object(x) for x in obj)
    if isinstance(obj, tuple):
        return sorted(sorted_object(x) for x in obj)
    return obj


def model_version(model_path):
    return int(os.listdir(model_path)[0])


def verify_model_spec(actual, name, signature_name, version):
    assert actual.name == name
    assert actual.signature_name == signature_name
    assert actual.version.value == version


def verify_predict_request(
    address,
    expected_output,
    expected_version,
    model_name="default",
    specify_output=True,
    batch_input=False,
    signature_name=DEFAULT_SIGNATURE,
    rpc_timeout=RPC_TIMEOUT,
):
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, rpc_timeout
        )
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, request.model_spec.name, signature_name, expected_version)


def half_plus_two():
    return tfs_testdata("saved_model_half_plus_two_cpu")


def half_plus_two_tf2():
    return tfs_testdata("saved_model_half_plus_two_tf2_cpu")


def half_plus_three():
    return tfs_testdata("saved_model_half_plus_three")


def good_model_config_file(work_dir):
    text = tfs_testdata("good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(half_plus_two()))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(half_plus_three()))
    path = work_dir / "good_model_config.conf"
    path.write_text(text)
    return path


def stub(address, service="prediction"):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(address)
    if service == "model":
        return channel, model_service_pb2_grpc.ModelServiceStub(channel)
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def testGetModelStatus(work_dir):
    from tensorflow_serving.apis import get_model_status_pb2

    address = run_server(work_dir, "default", half_plus_two())[1]
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    channel, model_stub = stub(address, "model")
    with channel:
        result = model_stub.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    assert result.model_version_status[0].status.error_code == 0


def testGetModelMetadata(work_dir):
    from tensorflow_serving.apis import get_model_metadata_pb2

    address = run_server(work_dir, "default", half_plus_two())[1]
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    channel, prediction = stub(address)
    with channel:
        result = prediction.GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == model_version(half_plus_two())
    assert len(result.metadata) == 1
    assert "signature_def" in result.metadata


def _classify_or_regress(work_dir, model_path, verb):
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    address = run_server(work_dir, "default", model_path)[1]
    if verb == "classify":
        request = classification_pb2.ClassificationRequest()
    else:
        request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = f"{verb}_x_to_y"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    channel, prediction = stub(address)
    with channel:
        call = prediction.Classify if verb == "classify" else prediction.Regress
        response = call(request, RPC_TIMEOUT)
    if verb == "classify":  # one example, one class
        scores = [[c.score for c in row.classes] for row in response.result.classifications]
        assert scores == [[3.0]]
    else:
        assert [r.value for r in response.result.regressions] == [3.0]
    verify_model_spec(
        response.model_spec,
        request.model_spec.name,
        request.model_spec.signature_name,
        model_version(model_path),
    )


def testClassify(work_dir):
    _classify_or_regress(work_dir, half_plus_two(), "classify")


def testClassifyTf2(work_dir):
    _classify_or_regress(work_dir, half_plus_two_tf2(), "classify")


def testRegress(work_dir):
    _classify_or_regress(work_dir, half_plus_two(), "regress")


def testRegressTf2(work_dir):
    _classify_or_regress(work_dir, half_plus_two_tf2(), "regress")


def _multi_inference(work_dir, model_path):
    from tensorflow_serving.apis import inference_pb2

    address = run_server(work_dir, "default", model_path)[1]
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    channel, prediction = stub(address)
    with channel:
        result = prediction.MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(
            result.results[i].model_spec,
            request.tasks[i].model_spec.name,
            request.tasks[i].model_spec.signature_name,
            model_version(model_path),
        )


def testMultiInference(work_dir):
    _multi_inference(work_dir, half_plus_two())


def testMultiInferenceTf2(work_dir):
    _multi_inference(work_dir, half_plus_two_tf2())


def testPredictSavedModel(work_dir):
    """The base class's `_TestPredict`."""
    address = run_server(work_dir, "default", half_plus_two())[1]
    version = model_version(half_plus_two())
    verify_predict_request(address, expected_output=3.0, expected_version=version)
    verify_predict_request(
        address, expected_output=3.0, specify_output=False, expected_version=version
    )


def testGoodModelConfig(work_dir):
    config_file = good_model_config_file(work_dir)
    address = run_server(work_dir, None, None, model_config_file=config_file)[1]
    for name, path, expected in (
        ("half_plus_two", half_plus_two(), 3.0),
        ("half_plus_three", half_plus_three(), 4.0),
    ):
        for specify_output in (True, False):
            verify_predict_request(
                address,
                model_name=name,
                expected_output=expected,
                specify_output=specify_output,
                expected_version=model_version(path),
            )


@pytest.mark.slow
def testBadModelConfig(work_dir):
    """The `serve` command itself (the original reads the binary's stderr)."""
    flags = command_line(
        work_dir, None, None, model_config_file=tfs_testdata("bad_model_config.txt")
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "serve", *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.find(b"Error parsing text-format tensorflow.serving.ModelServerConfig") > -1


BASE_CONFIG_PROTO = """
    model_config_list: {{
      config: {{
        name: "{name}",
        base_path: "{model_path}",
        model_platform: "tensorflow"
      }}
    }}
    """


def _serve_half_plus_two_then_swap(config_path, poll_period):
    """Serve half_plus_two from a model config file polled every `poll_period` seconds, check
    it answers, then rewrite the file to serve half_plus_three instead; returns the address."""
    config_path.write_text(
        BASE_CONFIG_PROTO.format(name="half_plus_two", model_path=half_plus_two())
    )
    address = run_server(
        config_path.parent,
        None,
        None,
        model_config_file=config_path,
        model_config_file_poll_period=poll_period,
    )[1]
    verify_predict_request(
        address,
        model_name="half_plus_two",
        expected_output=3.0,
        specify_output=False,
        expected_version=model_version(half_plus_two()),
    )
    config_path.write_text(
        BASE_CONFIG_PROTO.format(name="half_plus_three", model_path=half_plus_three())
    )
    return address


def testModelConfigReload(work_dir):
    poll_period = 1
    address = _serve_half_plus_two_then_swap(work_dir / "model_config_reload.txt", poll_period)
    # the original sleeps 10 s; this waits at most that long for the new config to be served
    deadline = time.monotonic() + 10
    while True:
        try:
            verify_predict_request(
                address,
                model_name="half_plus_three",
                expected_output=4.0,
                specify_output=False,
                expected_version=model_version(half_plus_three()),
            )
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def testModelConfigReloadWithZeroPollPeriod(work_dir):
    poll_period = 0
    address = _serve_half_plus_two_then_swap(work_dir / "model_config_zero_poll.txt", poll_period)
    time.sleep(poll_period + 1)
    verify_predict_request(
        address,
        model_name="half_plus_two",
        expected_output=3.0,
        specify_output=False,
        expected_version=model_version(half_plus_three()),
    )


def testGoodGrpcChannelArgs(work_dir):
    address = run_server(
        work_dir,
        "default",
        half_plus_two(),
        grpc_channel_arguments="grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
    )[1]
    verify_predict_request(
        address,
        expected_output=3.0,
        specify_output=False,
        expected_version=model_version(half_plus_three()),
    )


def testClassifyREST(work_dir):
    rest = run_server(work_dir, "default", half_plus_two())[2]
    body = call_rest(
        f"http://{rest}/v1/models/default:classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
    )
    assert json.loads(body.decode()) == {"results": [[["", 3.0]]]}


def testRegressREST(work_dir):
    rest = run_server(work_dir, "default", half_plus_two())[2]
    body = call_rest(
        f"http://{rest}/v1/models/default:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]},
    )
    assert json.loads(body.decode()) == {"results": [3.0]}


def testPredictREST(work_dir):
    rest = run_server(work_dir, "default", half_plus_two())[2]
    body = call_rest(f"http://{rest}/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert json.loads(body.decode()) == {"predictions": [3.0, 3.5, 4.0]}


def testPredictColumnarREST(work_dir):
    rest = run_server(work_dir, "default", half_plus_two())[2]
    body = call_rest(f"http://{rest}/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert json.loads(body.decode()) == {"outputs": [3.0, 3.5, 4.0]}


def testGetStatusREST(work_dir):
    rest = run_server(work_dir, "default", half_plus_two())[2]
    body = call_rest(f"http://{rest}/v1/models/default", None)
    assert json.loads(body.decode()) == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def testGetModelMetadataREST(work_dir):
    rest = run_server(work_dir, "default", half_plus_two())[2]
    body = call_rest(f"http://{rest}/v1/models/default/metadata", None)
    expected = json.loads(tfs_testdata("half_plus_two_model_metadata.json").read_text())
    assert sorted_object(json.loads(body.decode())) == sorted_object(expected)


def testPrometheusEndpoint(work_dir):
    rest = run_server(
        work_dir,
        "default",
        half_plus_two(),
        monitoring_config_file=tfs_testdata("monitoring_config.txt"),
    )[2]
    body = call_rest(f"http://{rest}/monitoring/prometheus/metrics", None)
    assert "# TYPE" in body.decode("utf-8")


def testPredictUDS(work_dir):
    server = run_server(work_dir, "default", half_plus_two())[0]
    verify_predict_request(
        f"unix:{server.grpc_socket_path}",
        expected_output=3.0,
        specify_output=False,
        expected_version=model_version(half_plus_three()),
    )


def test_tf_saved_model_save(work_dir):
    import tensorflow as tf

    base_path = work_dir / "tf_saved_model_save"
    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    to_save = root.f.get_concrete_function(tf.TensorSpec(None, tf.float32))
    tf.saved_model.save(root, str(base_path / "00000123"), to_save)
    address = run_server(work_dir, "default", base_path)[1]
    verify_predict_request(
        address,
        expected_output=12.0,
        specify_output=False,
        expected_version=model_version(base_path),
    )


def test_tf_saved_model_save_multiple_signatures(work_dir):
    import tensorflow as tf

    base_path = work_dir / "tf_saved_model_save_multiple_signatures"
    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(
        root,
        str(base_path / "00000123"),
        signatures={DEFAULT_SIGNATURE: root.f, "custom_signature_key": root.g},
    )
    address = run_server(work_dir, "default", base_path)[1]
    version = model_version(base_path)
    verify_predict_request(
        address,
        expected_output=2.0,
        expected_version=version,
        signature_name="custom_signature_key",
    )
    verify_predict_request(address, expected_output=1.0, expected_version=version)


KERAS_SEQUENTIAL = r"""
import sys
import tensorflow as tf

if sys.argv[2] == "distributed":
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    scope = tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1")).scope()
else:
    import contextlib
    scope = contextlib.nullcontext()
with scope:
    model = tf.keras.models.Sequential()
    model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
    if sys.argv[2] == "distributed":
        model.add(tf.keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"))
    model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))
serve = tf.function(
    lambda x: {"y": model(x)}, input_signature=[tf.TensorSpec((None, 1), tf.float32, name="x")])
tf.saved_model.save(model, sys.argv[1], signatures={"serving_default": serve})
"""


def _keras_sequential(work_dir, kind):
    base_path = work_dir / f"keras_sequential_saved_model_save_{kind}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    built = subprocess.run(
        [sys.executable, "-c", KERAS_SEQUENTIAL, str(base_path / "00000123"), kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    address = run_server(work_dir, "default", base_path)[1]
    verify_predict_request(
        address,
        batch_input=True,
        specify_output=False,
        expected_output=2.0,
        expected_version=model_version(base_path),
    )


@pytest.mark.slow
def test_sequential_keras_saved_model_save(work_dir):
    """Built in a subprocess, as the distributed case must be (virtual CPUs are set before TF
    starts)."""
    _keras_sequential(work_dir, "plain")


@pytest.mark.slow
def test_distrat_sequential_keras_saved_model_save(work_dir):
    _keras_sequential(work_dir, "distributed")
