"""Issue 20, server side: tensorflow_model_server's flags, hostile gRPC requests, per-name state,
SIGTERM, version folder names, load retries, start-up refusals and export durability.

Messages quoted from tensorflow/serving at 9d981c5c2708d23c5407c7c1e30309e6f9798874:
`model_servers/main.cc` (flag list), `model_servers/server.cc` (batching file without
batching, parallelism flags), `model_servers/server_core.cc` (platform, version labels,
models that did not become available), `sources/storage_path/file_system_storage_path_source.cc`
(missing base path; versions are `absl::SimpleAtoi` int64 names),
`servables/tensorflow/classifier.cc` (method-name check).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from tests.serving.conftest import REPO, serve_command, tfs_testdata

# every flag of tensorflow_model_server (model_servers/main.cc at 9d981c5, in its order)
MAIN_CC_FLAGS = [
    "port",
    "grpc_socket_path",
    "rest_api_port",
    "rest_api_num_threads",
    "rest_api_timeout_in_ms",
    "rest_api_enable_cors_support",
    "enable_batching",
    "allow_version_labels_for_unavailable_models",
    "batching_parameters_file",
    "enable_per_model_batching_parameters",
    "model_config_file",
    "model_config_file_poll_wait_seconds",
    "model_name",
    "model_base_path",
    "num_load_threads",
    "num_unload_threads",
    "max_num_load_retries",
    "load_retry_interval_micros",
    "file_system_poll_wait_seconds",
    "flush_filesystem_caches",
    "tensorflow_session_parallelism",
    "tensorflow_session_config_file",
    "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism",
    "use_alts_credentials",
    "ssl_config_file",
    "platform_config_file",
    "per_process_gpu_memory_fraction",
    "saved_model_tags",
    "grpc_channel_arguments",
    "grpc_max_threads",
    "enable_model_warmup",
    "num_request_iterations_for_warmup",
    "version",
    "monitoring_config_file",
    "remove_unused_fields_from_bundle_metagraph",
    "prefer_tflite_model",
    "num_tflite_pools",
    "num_tflite_interpreters_per_pool",
    "enable_signature_method_name_check",
    "xla_cpu_compilation_enabled",
    "xla_gpu_compilation_enabled",
    "enable_profiler",
    "thread_pool_factory_config_file",
    "mixed_precision",
    "skip_initialize_tpu",
    "enable_grpc_healthcheck_service",
    "enable_serialization_as_tensor_content",
]


def parse(*flags):
    from zoo.cli import build_parser

    return build_parser().parse_args(
        ["serve", "--port=0", "--grpc_host=127.0.0.1", "--rest_api_host=127.0.0.1", *flags]
    )


def code_of(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


# ---------------------------------------------------------------- flags


def test_every_flag_of_the_real_binary_is_accepted():
    from zoo.cli import build_parser

    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    assert len(MAIN_CC_FLAGS) == 48
    missing = [f for f in MAIN_CC_FLAGS if f"--{f}" not in serve._option_string_actions]
    assert missing == []
    args = parse(
        "--model_base_path=/m",
        "--num_tflite_pools=2",
        "--num_load_threads=4",
        "--enable_profiler",
        "--mixed_precision=bfloat16",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000",
        "--enable_batching=false",
        "--max_num_load_retries=2",
        "--load_retry_interval_micros=1000",
    )
    from serving.server import flags_without_effect

    assert flags_without_effect(args) == [
        "--num_load_threads",
        "--num_tflite_pools",
        "--enable_profiler",
        "--mixed_precision",
    ]
    assert (args.enable_batching, args.max_num_load_retries, args.load_retry_interval_micros) == (
        False,
        2,
        1000,
    )
    assert flags_without_effect(parse("--model_base_path=/m")) == []


def test_flags_refused_like_the_real_binary_or_for_safety(tmp_path):
    from serving.grpc_api import parse_channel_arguments
    from serving.server import _set_tensorflow_threads, batching_from_args, server_from_args

    assert parse_channel_arguments(
        "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb"
    ) == [("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb")]
    with pytest.raises(SystemExit, match="expected key=value, got 'nonsense'"):
        server_from_args(parse("--model_base_path=/m", "--grpc_channel_arguments=nonsense"))
    with pytest.raises(
        SystemExit,
        match="batching_parameters_file is set without setting "
        "server_options.enable_batching to true",
    ):
        batching_from_args(parse("--model_base_path=/m", "--batching_parameters_file=/b"))
    with pytest.raises(SystemExit, match="You cannot configure all"):
        _set_tensorflow_threads(
            parse(
                "--tensorflow_session_parallelism=2",
                "--tensorflow_intra_op_parallelism=2",
                "--tensorflow_inter_op_parallelism=2",
            )
        )
    with pytest.raises(SystemExit, match="ALTS credentials are not available"):
        server_from_args(parse("--model_base_path=/m", "--use_alts_credentials"))
    with pytest.raises(SystemExit, match="TLS is not available"):
        server_from_args(parse("--model_base_path=/m", "--ssl_config_file=/ssl"))


def test_version_flag(capsys):
    import tensorflow as tf

    from serving.server import main

    assert main(parse("--version")) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("TensorFlow ModelServer: keras-attention-zoo")
        and f"TensorFlow Library: {tf.__version__}" in out
    )


def test_grpc_flags_are_honoured(tmp_path):
    """--grpc_socket_path, --enable_grpc_healthcheck_service,
    --enable_serialization_as_tensor_content, --enable_signature_method_name_check=true,
    --saved_model_tags."""
    from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

    from serving.config_protos import HealthCheckRequest, HealthCheckResponse
    from serving.server import server_from_args
    from tests.serving.test_grpc import predict_request

    socket = tmp_path / "s.sock"
    args = parse(
        f"--model_base_path={tfs_testdata('saved_model_half_plus_two_tf2_cpu')}",
        f"--grpc_socket_path={socket}",
        "--enable_grpc_healthcheck_service",
        "--enable_serialization_as_tensor_content=true",
        "--enable_signature_method_name_check=true",
    )
    with (
        server_from_args(args, rest_api_port=None, poll_wait_seconds=0) as server,
        grpc.insecure_channel(f"unix:{socket}") as channel,
    ):
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        assert check(HealthCheckRequest(service=""), timeout=10).status == 1  # SERVING
        assert check(HealthCheckRequest(service="PredictionService"), timeout=10).status == 1
        assert (
            code_of(lambda: check(HealthCheckRequest(service="nope"), timeout=10))[0]
            == grpc.StatusCode.NOT_FOUND
        )
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.Predict(predict_request(), timeout=20)
        assert reply.outputs["y"].tensor_content == np.array([3.0, 3.5, 4.0], "<f4").tobytes()
        assert not reply.outputs["y"].float_val
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name, request.model_spec.signature_name = "default", "classify_x_to_y"
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
        assert code_of(lambda: stub.Classify(request, timeout=20)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/predict",
        )
        assert server.port > 0  # TCP as well
    tagged = server_from_args(
        parse(
            f"--model_base_path={tfs_testdata('saved_model_half_plus_two_cpu')}",
            "--saved_model_tags=serve,gpu",
            "--max_num_load_retries=0",
        ),
        rest_api_port=None,
        poll_wait_seconds=0,
    )
    from serving.errors import ServingError

    with pytest.raises(
        ServingError,
        match=r"1 model\(s\) did not become available: \{\{\{name: default version: 123\} "
        r"due to error: NOT_FOUND: Could not find meta graph def matching supplied "
        r"tags: \{ serve gpu \}",
    ):
        tagged.start()


def test_cors_flag(tmp_path):
    """--rest_api_enable_cors_support: http_server.cc adds AddCORSHeaders' three headers to /v1
    answers and answers a preflight (OPTIONS) with an empty body, 400 without an http(s) Origin."""
    from serving.server import CORS_HEADERS, server_from_args

    assert CORS_HEADERS == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "POST, GET",
        "Access-Control-Allow-Headers": "Content-Type",
    }
    args = parse(
        f"--model_base_path={tfs_testdata('saved_model_half_plus_two_cpu')}",
        "--rest_api_port=0",
        "--rest_api_enable_cors_support=true",
        "--rest_api_num_threads=2",
    )
    with server_from_args(args, port=None, poll_wait_seconds=0) as server:
        base = f"http://127.0.0.1:{server.rest_api_port}/v1/models/default"
        with urllib.request.urlopen(base, timeout=10) as reply:
            assert {k: reply.headers[k] for k in CORS_HEADERS} == CORS_HEADERS
        preflight = urllib.request.Request(
            base + ":predict", method="OPTIONS", headers={"Origin": "https://a.example"}
        )
        with urllib.request.urlopen(preflight, timeout=10) as reply:
            assert (reply.status, reply.read(), reply.headers["Access-Control-Allow-Origin"]) == (
                200,
                b"",
                "*",
            )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(
                urllib.request.Request(base + ":predict", method="OPTIONS"), timeout=10
            )
        assert (info.value.code, info.value.read()) == (400, b"")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.rest_api_port}/v1/models/default:predict",
            b'{"instances": [2.0]}',
            timeout=10,
        ) as reply:
            assert json.loads(reply.read()) == {"predictions": [3.0]}
            assert reply.headers["Access-Control-Allow-Methods"] == "POST, GET"


# ---------------------------------------------------------------- hostile gRPC requests


@pytest.mark.parametrize(
    "dims, values",
    [
        ([2**62, 4], [1.0]),
        ([1] * 70, [1.0]),
        ([2**31, 2**31], [1.0]),
        ([2**40], []),
        ([2**33, 2**31], []),
    ],
    ids=["2^62x4", "rank70", "2^31x2^31", "2^40-empty", "int64-overflow"],
)
def test_huge_or_deep_shapes_are_invalid_argument(tf_server, dims, values):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    tensor = request.inputs["x"]
    tensor.dtype = 1
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    tensor.float_val.extend(values)
    with grpc.insecure_channel(f"127.0.0.1:{tf_server.port}") as channel:
        code, details = code_of(
            lambda: prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=20
            )
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("tensor parsing error: x")


def test_an_internal_failure_names_no_python_exception(tf_server, monkeypatch):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.grpc_api import INTERNAL_MESSAGE
    from tests.serving.test_grpc import predict_request

    def broken(*args, **kwargs):
        raise KeyError("a Python detail")

    monkeypatch.setattr(tf_server.manager, "resolve", broken)
    with grpc.insecure_channel(f"127.0.0.1:{tf_server.port}") as channel:
        code, details = code_of(
            lambda: prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                predict_request(), timeout=20
            )
        )
    assert (code, details) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert "KeyError" not in details and "Python" not in details
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    monkeypatch.setattr(tf_server.manager, "reload", broken)
    with grpc.insecure_channel(f"127.0.0.1:{tf_server.port}") as channel:
        assert code_of(
            lambda: model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(), timeout=20
            )
        ) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


# ---------------------------------------------------------------- per-name state


class _AbortContext:
    def abort(self, code, details):
        raise grpc.RpcError(details)


def test_unknown_model_names_add_no_state(tf_server):
    """8000 distinct unknown names through the gRPC servicer and 100 over REST: no metric cell,
    no line on the metrics page, memory flat (it grew ~0.8 KB per name: 6 MB here)."""
    from tensorflow_serving.apis import predict_pb2

    from serving.grpc_api import _servicers
    from serving.handlers import Handlers

    metrics = tf_server.metrics
    before = (dict(metrics._counts), {k: list(v) for k, v in metrics._latency.items()})
    prediction = _servicers()[0](Handlers(tf_server.manager, metrics))
    request = predict_pb2.PredictRequest()

    def burst(start, count):
        for i in range(start, start + count):
            request.model_spec.name = f"unknown-{i}"
            with pytest.raises(
                grpc.RpcError, match=r"Servable not found for request: Latest\(unknown-"
            ):
                prediction.Predict(request, _AbortContext())

    burst(0, 1000)  # warm up caches
    tracemalloc.start()
    try:
        first = tracemalloc.get_traced_memory()[0]
        burst(1000, 8000)
        grown = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, grown
    for i in range(100):
        url = f"http://127.0.0.1:{tf_server.rest_api_port}/v1/models/rest-unknown-{i}:predict"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, b'{"instances": [1.0]}'), timeout=10)
        assert info.value.code == 404
    assert (dict(metrics._counts), {k: list(v) for k, v in metrics._latency.items()}) == before
    assert "unknown-" not in metrics.render()


# ---------------------------------------------------------------- version folders


def test_only_plain_ascii_int64_folder_names_are_versions():
    from serving.models import parse_version_folder

    assert {
        name: parse_version_folder(name)
        for name in [
            "123",
            "00000123",
            "0",
            "9223372036854775807",
            "9223372036854775808",
            "12345678901234567890",
            "\u00b2",
            "\u0663",
            "1\u00b2",
            "+1",
            "-1",
            " 1",
            "1.0",
            "",
        ]
    } == {
        "123": 123,
        "00000123": 123,
        "0": 0,
        "9223372036854775807": 2**63 - 1,
        "9223372036854775808": None,
        "12345678901234567890": None,
        "\u00b2": None,
        "\u0663": None,
        "1\u00b2": None,
        "+1": None,
        "-1": None,
        " 1": None,
        "1.0": None,
        "": None,
    }


def test_odd_version_folders_are_ignored_at_start_and_at_run_time(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.models import ModelManager

    source = tfs_testdata("saved_model_half_plus_two_cpu") / "00000123"
    for model in ("a", "b"):
        shutil.copytree(source, tmp_path / model / "1")
    for odd in (
        "\u00b2",
        "\u0663",
        "12345678901234567890",
    ):  # would be the latest if read as versions
        shutil.copytree(source, tmp_path / "a" / odd)
    config = text_format.Parse(
        f'model_config_list {{ config {{ name: "a" base_path: "{tmp_path / "a"}" '
        'model_platform: "tensorflow" } '
        f'config {{ name: "b" base_path: "{tmp_path / "b"}" model_platform: "tensorflow" }} }}',
        model_server_config_pb2.ModelServerConfig(),
    )
    manager = ModelManager(config)
    try:
        manager.poll()
        assert manager.status("a") == [(1, "AVAILABLE", "OK", "")]
        shutil.copytree(source, tmp_path / "a" / "\u0663\u0663")
        shutil.copytree(source, tmp_path / "a" / "99999999999999999999")
        shutil.copytree(source, tmp_path / "b" / "2")  # the other model's version change goes on
        manager.poll()
        assert manager.status("a") == [(1, "AVAILABLE", "OK", "")]
        assert [s[:2] for s in manager.status("b")] == [(2, "AVAILABLE"), (1, "END")]
        servable = manager.resolve("a")
        assert servable.version == 1
        assert servable.run(
            servable.signatures["serving_default"], {"x": np.array([2.0], np.float32)}
        )["y"] == [3.0]
    finally:
        manager.close()


# ---------------------------------------------------------------- load retries


def test_a_version_caught_mid_copy_is_retried_and_loads(tmp_path):
    from serving.models import ModelManager, single_model_config

    source = tfs_testdata("saved_model_half_plus_two_cpu") / "00000123"
    (tmp_path / "m" / "1").mkdir(parents=True)
    shutil.copy(source / "saved_model.pb", tmp_path / "m" / "1")  # the variables are not copied yet
    manager = ModelManager(
        single_model_config("m", str(tmp_path / "m")),
        max_num_load_retries=5,
        load_retry_interval_s=0.2,
    )
    try:
        manager.poll()
        assert manager.status("m") == [(1, "LOADING", "OK", "")]  # failed once, a retry is pending
        assert manager.servables["m"] == {} and manager.pending_retries() is not None
        shutil.copytree(source / "variables", tmp_path / "m" / "1" / "variables")
        manager.poll_until_settled()
        assert manager.status("m") == [(1, "AVAILABLE", "OK", "")]
        assert manager.pending_retries() is None
    finally:
        manager.close()


def test_load_retries_end_in_an_error_state(tmp_path):
    from serving.models import ModelManager, single_model_config

    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    manager = ModelManager(
        single_model_config("m", str(tmp_path / "m")),
        max_num_load_retries=2,
        load_retry_interval_s=0.0,
    )
    attempts = []
    original = manager._load_failed
    manager._load_failed = lambda *a: (attempts.append(1), original(*a))
    try:
        manager.poll_until_settled()
        [(version, state, code, message)] = manager.status("m")
        assert (version, state, code, len(attempts)) == (
            1,
            "END",
            "UNKNOWN",
            3,
        )  # 1 attempt + 2 retries
        manager.poll()
        assert len(attempts) == 3  # given up until the version changes on disk
    finally:
        manager.close()


# ---------------------------------------------------------------- start-up refusals


def config_text(base_path, platform="tensorflow", extra=""):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(
        f'model_config_list {{ config {{ name: "m" base_path: "{base_path}" '
        f'model_platform: "{platform}" {extra} }} }}',
        model_server_config_pb2.ModelServerConfig(),
    )


@pytest.mark.parametrize(
    "case",
    [
        "missing base path",
        "unknown platform",
        "no platform",
        "label on a missing version",
        "failing model",
    ],
)
def test_configs_tf_serving_refuses_are_refused_at_start(tmp_path, case):
    from serving.errors import ServingError
    from serving.server import Server

    two = tfs_testdata("saved_model_half_plus_two_cpu")
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "saved_model.pb").write_bytes(b"garbage")
    config, code, message = {
        "missing base path": (
            config_text(tmp_path / "nope"),
            "INVALID_ARGUMENT",
            f"Could not find base path {tmp_path / 'nope'} for servable m with error NOT_FOUND",
        ),
        "unknown platform": (
            config_text(two, "tensorflow_lite"),
            "INVALID_ARGUMENT",
            "Model m requests unsupported platform tensorflow_lite",
        ),
        "no platform": (
            config_text(two, ""),
            "INVALID_ARGUMENT",
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is m",
        ),
        "label on a missing version": (
            config_text(two, extra='version_labels { key: "stable" value: 7 }'),
            "FAILED_PRECONDITION",
            "Request to assign label to version 7 of model m, "
            "which is not currently available for inference",
        ),
        "failing model": (
            config_text(tmp_path / "bad"),
            "UNKNOWN",
            "1 model(s) did not become available: {{{name: m version: 1} due to error: ",
        ),
    }[case]
    server = Server(
        config, rest_api_port=None, port=0, host="127.0.0.1", poll_wait_seconds=0, strict_start=True
    )
    with pytest.raises(ServingError) as info:
        server.start()
    assert info.value.code == code and info.value.message.startswith(message), info.value.message
    if case == "label on a missing version":
        allowed = Server(
            config,
            rest_api_port=None,
            port=0,
            host="127.0.0.1",
            poll_wait_seconds=0,
            manager_options=dict(allow_version_labels_for_unavailable_models=True),
        )
        with allowed:
            assert allowed.manager.resolve("m").version == 123


def test_serve_command_reports_a_failed_start(tmp_path, monkeypatch, capsys):
    from serving.server import main

    monkeypatch.setattr(signal, "signal", lambda *args: None)
    assert main(parse(f"--model_base_path={tmp_path / 'nope'}", "--rest_api_port=0")) == 255
    assert (
        "Failed to start server. Error: INVALID_ARGUMENT: Could not find base path "
        f"{tmp_path / 'nope'}" in capsys.readouterr().err
    )
    (tmp_path / "not-a-socket").write_text("a regular file")
    assert (
        main(
            parse(
                f"--model_base_path={tfs_testdata('saved_model_half_plus_two_cpu')}",
                "--rest_api_port=0",
                f"--grpc_socket_path={tmp_path / 'not-a-socket'}",
                "--file_system_poll_wait_seconds=0",
            )
        )
        == 255
    )
    assert (
        "Failed to start server. Error: gRPC server failed to start: "
        "could not listen on the gRPC socket "
        f"{tmp_path / 'not-a-socket'}" in capsys.readouterr().err
    )


# ---------------------------------------------------------------- SIGTERM


SLOW_MODEL = r"""
import sys
import tensorflow as tf


class Slow(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        steps = tf.cast(x[0], tf.int64)  # x[0] loop steps: seconds of CPU for x = 1e9
        done = tf.while_loop(lambda i: i < steps, lambda i: i + 1, [tf.constant(0, tf.int64)])[0]
        return {"y": x + tf.cast(done, tf.float32) * 0.0}


module = Slow()
tf.saved_model.save(module, sys.argv[1], signatures={"serving_default": module.serve})
"""


@pytest.mark.slow
def test_sigterm_stops_accepting_at_once_and_exits_within_the_grace_period(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    built = subprocess.run(
        [sys.executable, "-c", SLOW_MODEL, str(tmp_path / "slow" / "1")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    grace = 2.0
    flags = ["--shutdown_grace_seconds", str(grace)]
    flags += ["--num_tflite_pools=2", "--enable_profiler=false"]
    with serve_command(tmp_path / "slow", *flags, wait_s=120) as (process, lines, port):
        assert (
            "Accepted but without effect in this server: --num_tflite_pools, --enable_profiler\n"
            in lines
        )
        url = f"http://127.0.0.1:{port}/v1/models/default:predict"

        def predict(x, timeout=60):
            request = urllib.request.Request(url, f'{{"instances": [{x}]}}'.encode())
            return urllib.request.urlopen(request, timeout=timeout).read()

        assert json.loads(predict(2.0)) == {"predictions": [2.0]}

        def abandoned():  # cut off by the shutdown: its answer, if any, does not matter here
            try:
                predict(1e10)
            except (urllib.error.URLError, ConnectionError, OSError):
                pass

        slow = threading.Thread(target=abandoned, daemon=True)
        slow.start()
        time.sleep(0.5)  # computing now
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises((urllib.error.URLError, ConnectionError)) as refused:
            predict(2.0, timeout=5)
        if isinstance(refused.value, urllib.error.HTTPError):
            assert refused.value.code == 503
        out, _ = process.communicate(timeout=30)
        elapsed = time.monotonic() - signalled
        assert process.returncode == 0, out
        assert elapsed < grace + 1.0, (elapsed, out)
        assert "Server stopped" in out


# ---------------------------------------------------------------- export


def test_export_permissions_durability_and_abandoned_temporary_folders(tmp_path, monkeypatch):
    import keras

    from serving.saved_model import export

    model_dir = tmp_path / "m"
    model_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f".tmp-export-3-{dead.pid}-abc", ".tmp-export-2-oldstyle"):  # killed exports
        (model_dir / name / "variables").mkdir(parents=True)
    live = model_dir / f".tmp-export-3-{os.getppid()}-xyz"  # another export writing right now
    live.mkdir()
    synced, replaced = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    monkeypatch.setattr(
        os, "replace", lambda a, b: (replaced.append((a, b, len(synced))), real_replace(a, b))
    )
    inputs = keras.Input((4,), name="features")
    path = export(keras.Model(inputs, keras.layers.Dense(2)(inputs)), tmp_path, "m", version=5)
    monkeypatch.undo()
    assert sorted(os.listdir(model_dir)) == sorted(["5", live.name])
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o777 & ~umask
    assert (
        os.stat(os.path.join(path, "saved_model.pb")).st_mode & 0o044 == 0o044 & ~umask
    )  # others may read
    [(tmp, target, synced_before)] = replaced
    assert target == path
    written = [p for p in synced[:synced_before] if p.startswith(tmp)]
    assert os.path.join(tmp, "saved_model.pb") in written and tmp in written
    assert any(p.startswith(os.path.join(tmp, "variables", "variables.data")) for p in written)
    assert str(model_dir) in synced[synced_before:]  # the rename itself
