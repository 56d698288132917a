"""--monitoring_config_file: Prometheus metrics in TF Serving's names on the REST port."""

import re
import urllib.request

import pytest

from serving import Client
from tests.serving.conftest import tfs_testdata
from tests.serving.test_rest import call, call_json

PATH = "/monitoring/prometheus/metrics"


def scrape(server, path=PATH):
    with urllib.request.urlopen(
        f"http://127.0.0.1:{server.rest_api_port}{path}", timeout=20
    ) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def sample(text, name, **labels):
    """The value of the sample `name{labels}` (labels in any order), or None."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\S+?)\{(.*)\} (\S+)", line)
        if match and match.group(1) == name:
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
            if got == {k: str(v) for k, v in labels.items()}:
                return float(match.group(3))
    return None


def test_monitoring_config_flag(tmp_path):
    from serving.server import monitoring_from_args
    from tests.serving.test_model_config import serve_args

    assert (
        monitoring_from_args(
            serve_args("--monitoring_config_file", str(tfs_testdata("monitoring_config.txt")))
        )
        == PATH
    )
    off = tmp_path / "off.config"
    off.write_text("prometheus_config { enable: false path: '/m' }")
    assert monitoring_from_args(serve_args("--monitoring_config_file", str(off))) is None
    off.write_text("prometheus_config { enable: true }")
    assert (
        monitoring_from_args(serve_args("--monitoring_config_file", str(off))) == PATH
    )  # the default path
    off.write_text("prometheus { enable: true }")
    with pytest.raises(
        SystemExit, match="--monitoring_config_file: .*not a valid MonitoringConfig"
    ):
        monitoring_from_args(serve_args("--monitoring_config_file", str(off)))
    assert monitoring_from_args(serve_args()) is None


def test_request_count_and_latency_after_rest_and_grpc_requests():
    from serving.metrics import read_monitoring_path
    from serving.models import single_model_config
    from serving.server import Server

    server = Server(
        single_model_config("default", str(tfs_testdata("saved_model_half_plus_two_cpu"))),
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0,
        monitoring_path=read_monitoring_path(tfs_testdata("monitoring_config.txt")),
    )
    with server:
        assert "# TYPE :tensorflow:serving:request_count counter" in scrape(server)
        for _ in range(3):
            assert call_json(server, "/v1/models/default:predict", {"instances": [2.0]}) == (
                200,
                {"predictions": [3.0]},
            )
        assert call(server, "/v1/models/default:predict", b"{bad")[0] == 400
        assert call(server, "/v1/models/nope:predict", {"instances": [2.0]})[0] == 404
        body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
        assert call_json(server, "/v1/models/default:regress", body)[0] == 200
        grpc_client = Client(grpc=f"127.0.0.1:{server.port}", timeout=20, retries=0)
        assert grpc_client.predict("default", [2.0])["y"].tolist() == [3.0]
        assert grpc_client.predict("default", [4.0])["y"].tolist() == [4.0]
        grpc_client.close()
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        from tests.serving.test_grpc import predict_request

        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(predict_request(version=99), timeout=20)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        call(server, "/v1/models/default")  # status calls are not counted

        text = scrape(server)
        count = ":tensorflow:serving:request_count"
        assert sample(text, count, model_name="default", status="OK") == 3 + 1 + 2
        assert sample(text, count, model_name="default", status="INVALID_ARGUMENT") == 1
        assert 'model_name="nope"' not in text  # unknown names add no state (issue 20)
        assert sample(text, count, model_name="default", status="NOT_FOUND") == 1  # gRPC version 99
        latency = ":tensorflow:serving:request_latency"
        assert "# TYPE :tensorflow:serving:request_latency histogram" in text
        rest = dict(model_name="default", API="Predict", entrypoint="REST")
        assert sample(text, latency + "_count", **rest) == 4
        assert sample(text, latency + "_bucket", **rest, le="+Inf") == 4
        assert sample(text, latency + "_sum", **rest) > 0
        assert (
            sample(text, latency + "_count", model_name="default", API="Regress", entrypoint="REST")
            == 1
        )
        grpc_labels = dict(model_name="default", API="Predict", entrypoint="GRPC")
        assert sample(text, latency + "_count", **grpc_labels) == 3  # the failed call counts too
        buckets = [
            sample(text, latency + "_bucket", **grpc_labels, le=le)
            for le in re.findall(r'entrypoint="GRPC",le="([^"]+)"', text)
        ]
        assert buckets == sorted(buckets) and buckets[-1] == 3  # cumulative
        # only the configured path: everything else outside /v1 stays a plain 404
        assert call(server, "/monitoring/prometheus")[0] == 404


def test_no_metrics_path_without_monitoring(tf_server):
    assert call(tf_server, PATH)[0] == 404
