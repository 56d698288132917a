"""serving/deploy: the shipped TF Serving configs parse with the TF Serving protos, and the
docker-compose file and Kubernetes manifests agree with them, with each other and with the
export layout; the same flags run this project's server on a real export."""

import shlex

import pytest

from tests.serving.conftest import REPO

yaml = pytest.importorskip("yaml")
DEPLOY = REPO / "serving" / "deploy"
CONFIG_FILES = ("models.config", "batching.config", "monitoring.config")


def flags(args):
    """{--flag: value} of `--flag=value` arguments."""
    out = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, arg
        key, value = arg.split("=", 1)
        out[key] = value
    return out


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["tfserving"]


@pytest.fixture(scope="module")
def k8s():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["ConfigMap", "Deployment", "Service"] and len(docs) == 3
    return by_kind


def test_shipped_configs_parse_with_tf_serving_protos():
    from serving.batching import read_batching_options
    from serving.metrics import read_monitoring_path
    from serving.models import read_model_config

    config = read_model_config(DEPLOY / "models.config")
    models = list(config.model_config_list.config)
    assert models and all(
        m.base_path == f"/models/{m.name}" and m.model_platform == "tensorflow" for m in models
    )
    batching = read_batching_options(DEPLOY / "batching.config")
    assert batching.allowed_batch_sizes[-1] == batching.max_batch_size
    assert read_monitoring_path(DEPLOY / "monitoring.config") == "/monitoring/prometheus/metrics"


def test_compose_and_kubernetes_agree(compose, k8s):
    from serving.metrics import read_monitoring_path
    from serving.models import read_model_config

    names = [m.name for m in read_model_config(DEPLOY / "models.config").model_config_list.config]
    metrics_path = read_monitoring_path(DEPLOY / "monitoring.config")
    # docker compose: official image, both ports, the base path and each config file mounted
    # where the flags say
    assert compose["image"].split(":")[0].endswith("tensorflow/serving")
    assert sorted(compose["ports"]) == ["8500:8500", "8501:8501"]
    mounts = {v["target"]: v["source"] for v in compose["volumes"]}
    assert "/models" in mounts
    compose_flags = flags(compose["command"])
    for name in CONFIG_FILES:
        assert (DEPLOY / mounts[f"/config/{name}"]).resolve() == (DEPLOY / name).resolve()
    assert compose_flags["--model_config_file"] == "/config/models.config"
    assert compose_flags["--batching_parameters_file"] == "/config/batching.config"
    assert compose_flags["--monitoring_config_file"] == "/config/monitoring.config"
    assert compose_flags["--enable_batching"] == "true"
    assert (compose_flags["--port"], compose_flags["--rest_api_port"]) == ("8500", "8501")
    # kubernetes: the ConfigMap carries the same files, the pod runs the same flags
    configmap, deployment, service = k8s["ConfigMap"], k8s["Deployment"], k8s["Service"]
    for name in CONFIG_FILES:
        assert configmap["data"][name] == (DEPLOY / name).read_text()
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"].split(":")[0] == compose["image"].split(":")[0]
    assert flags(container["args"]) == compose_flags
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["port"] == 8501 and probe["path"] in [f"/v1/models/{n}" for n in names]
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"} and set(resources["limits"]) == {
        "cpu",
        "memory",
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["models"] == "/models"
    assert all(
        compose_flags[f].startswith(mounts["config"] + "/")
        for f in ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file")
    )
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert "persistentVolumeClaim" in volumes["models"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == metrics_path
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8501"
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert {(p["port"], ports[p["targetPort"]]) for p in service["spec"]["ports"]} == {
        (8500, 8500),
        (8501, 8501),
    }


def test_deploy_flags_serve_an_export(tmp_path, compose):
    """The compose flags, with /models and /config mapped to local folders, run this project's
    server on a `serving.export` base path: ready by the probe's URL, batching on, metrics
    served."""
    import keras
    import numpy as np

    from serving import Client
    from serving.saved_model import export
    from serving.server import Server, batching_from_args, config_from_args, monitoring_from_args
    from tests.serving.test_model_config import serve_args
    from tests.serving.test_monitoring import scrape
    from tests.serving.test_rest import call_json

    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    base = tmp_path / "models"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    text = (DEPLOY / "models.config").read_text().replace('"/models/', f'"{base}/')
    (config_dir / "models.config").write_text(text)
    for name in ("batching.config", "monitoring.config"):
        (config_dir / name).write_text((DEPLOY / name).read_text())
    from serving.models import read_model_config

    for m in read_model_config(config_dir / "models.config").model_config_list.config:
        export(model, str(base), m.name)
    args = [
        a.replace("=/config/", f"={config_dir}/")
        for a in compose["command"]
        if not a.startswith(("--port=", "--rest_api_port="))
    ]
    args = serve_args(*shlex.split(" ".join(args)))
    assert args.enable_batching is True
    server = Server(
        config_from_args(args),
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0,
        batching=batching_from_args(args),
        monitoring_path=monitoring_from_args(args),
    )
    with server:
        status, body = call_json(server, "/v1/models/cbam_cnn")
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
        assert server.batcher is not None and server.batcher.options.max_batch_size == 32
        x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
        got = Client(rest=f"127.0.0.1:{server.rest_api_port}", timeout=20).predict("cbam_cnn", x)[
            "output_0"
        ]
        np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
        assert ':tensorflow:serving:request_count{model_name="cbam_cnn",status="OK"} 1' in scrape(
            server
        )
