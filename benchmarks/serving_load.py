"""Serving under load: latency and throughput of this project's TF-Serving-compatible server.

A small Keras CNN (64x64x3 -> 10) is exported with `serving.export` and served in-process on
loopback. N client threads (`serving.Client`) each send a bounded number of batch-1 predict
requests over REST or gRPC, with and without dynamic batching; every configuration runs
`--repeats` times in turn (interleaved) and the table shows medians: p50/p99 latency over all
requests of a repeat and throughput (requests / wall time). The baseline is the same SavedModel
called in-process (its `serving_default` signature, batch 1), measured in the same run: the
per-request overhead is served p50 at 1 client minus the in-process p50.

Clients and server share this process (and its GIL), so absolute numbers understate a real
deployment; the ratios between rows are what this measures. The same four configurations run a
second time with a fixed-payload client (the request encoded once, as a load generator sends
it), which separates the server's per-request cost from `serving.Client`'s encoding. The mean
batch size (request rows per model call) and the model's own batch-16 cost per row show how
much batching can gain on this model and machine.

Usage: `python benchmarks/serving_load.py [--clients 16] [--requests 25] [--repeats 3]`.
Writes benchmarks/results/serving_load.md and .json.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
BATCHING = ("max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } "
            "max_enqueued_batches { value: 100 } num_batch_threads { value: 2 }")


def small_cnn():
    import keras

    inputs = keras.Input((64, 64, 3), name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


class FixedPayloadClient:
    """What a load generator (wrk, ghz) does: the same request, encoded once, sent every time.
    Its rows measure the server and the transport without `serving.Client` encoding each request
    (JSON text of 12288 floats over REST) in this process, beside the server, under one GIL."""

    def __init__(self, protocol, address, image):
        self.protocol = protocol
        if protocol == "rest":
            self.url = f"http://{address}/v1/models/cnn:predict"
            # the very body serving.Client sends (columnar, float64 text of the float32 values)
            self.body = json.dumps({"inputs": {"image": image.astype(np.float64).tolist()}}).encode()
        else:
            import grpc
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

            from serving.grpc_api import MAX_MESSAGE_OPTIONS, make_tensor_proto

            self.channel = grpc.insecure_channel(address, options=MAX_MESSAGE_OPTIONS)
            self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
            self.request = predict_pb2.PredictRequest()
            self.request.model_spec.name = "cnn"
            make_tensor_proto(image, self.request.inputs["image"])

    def predict(self, model, inputs):
        if self.protocol == "rest":
            import urllib.request

            request = urllib.request.Request(self.url, data=self.body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        return self.stub.Predict(self.request, timeout=60)

    def close(self):
        if self.protocol == "grpc":
            self.channel.close()


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def run_load(client, clients, requests, image):
    """(per-request latencies in s, wall s) for `clients` threads x `requests` predicts."""
    latencies, errors = [], []
    barrier = threading.Barrier(clients + 1)
    lock = threading.Lock()

    def worker():
        mine = []
        barrier.wait()
        for _ in range(requests):
            started = time.perf_counter()
            try:
                client.predict("cnn", image)
            except Exception as error:  # counted and reported
                errors.append(repr(error))
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    return latencies, wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=25, help="requests per client per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", default=str(RESULTS), help="where serving_load.md/.json go")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf
    from google.protobuf import text_format

    from serving import Client
    from serving.batching import BatchingOptions
    from serving.config_protos import BatchingParameters
    from serving.saved_model import export
    from serving.models import single_model_config
    from serving.server import Server

    keras.utils.set_random_seed(0)
    workdir = tempfile.mkdtemp(prefix="serving_load_")
    export(small_cnn(), workdir, "cnn", version=1)
    image = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)

    # baseline: the exported signature called in-process, batch 1
    signature = tf.saved_model.load(os.path.join(workdir, "cnn", "1")).signatures["serving_default"]
    tensor = tf.constant(image)
    for _ in range(20):
        signature(image=tensor)

    def inprocess_p50(n=200, batch=tensor):
        times = []
        for _ in range(n):
            started = time.perf_counter()
            signature(image=batch)["output_0"].numpy()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    # what batching can gain at most: the model's own cost per row at batch 16 vs batch 1
    batch16 = tf.constant(np.repeat(image, 16, axis=0))
    for _ in range(5):
        signature(image=batch16)
    batch16_ms = inprocess_p50(40, batch16) * 1e3

    batching = BatchingOptions(text_format.Parse(BATCHING, BatchingParameters()))
    servers = {}
    for batched in (False, True):
        server = Server(single_model_config("cnn", os.path.join(workdir, "cnn")), rest_api_port=0, port=0,
                        host="127.0.0.1", poll_wait_seconds=0, batching=batching if batched else None)
        servers[batched] = server.start()
    configs = []
    for kind in ("serving.Client", "fixed payload"):  # the issue's rows first, then the server alone
        for protocol in ("rest", "grpc"):
            for batched in (False, True):
                server = servers[batched]
                address = f"127.0.0.1:{server.rest_api_port if protocol == 'rest' else server.port}"
                if kind == "serving.Client":
                    client = Client(**{protocol: address}, timeout=60, retries=0)
                else:
                    client = FixedPayloadClient(protocol, address, image)
                run_load(client, 4, 5, image)  # warm-up (and the client's signature cache)
                configs.append({"protocol": protocol, "batching": batched, "client_kind": kind, "client": client})

    samples = {i: {"p50": [], "p99": [], "rps": [], "p50_1": [], "batch": []} for i in range(len(configs))}
    baseline = []
    for _ in range(args.repeats):
        baseline.append(inprocess_p50())
        for i, config in enumerate(configs):
            lat1, _ = run_load(config["client"], 1, args.requests, image)
            samples[i]["p50_1"].append(statistics.median(lat1))
            batcher = servers[config["batching"]].batcher
            calls_before = batcher.batches_run if batcher is not None else 0
            latencies, wall = run_load(config["client"], args.clients, args.requests, image)
            # mean batch size: every request is one row, and the batcher counts its model calls
            calls = batcher.batches_run - calls_before if batcher is not None else len(latencies)
            samples[i]["batch"].append(len(latencies) / calls if calls else float("nan"))
            samples[i]["p50"].append(percentile(latencies, 50))
            samples[i]["p99"].append(percentile(latencies, 99))
            samples[i]["rps"].append(len(latencies) / wall)
    for config in configs:
        config.pop("client").close()
    for server in servers.values():
        server.stop()

    base_ms = statistics.median(baseline) * 1e3
    rows = []
    for i, config in enumerate(configs):
        s = {k: statistics.median(v) for k, v in samples[i].items()}
        rows.append({"protocol": config["protocol"], "batching": config["batching"], "client": config["client_kind"],
                     "clients": args.clients,
                     "p50_ms": s["p50"] * 1e3, "p99_ms": s["p99"] * 1e3, "throughput_rps": s["rps"],
                     "p50_1_client_ms": s["p50_1"] * 1e3, "overhead_ms": s["p50_1"] * 1e3 - base_ms,
                     "mean_batch_size": s["batch"]})
    for row in rows:
        unbatched = next(r for r in rows if r["protocol"] == row["protocol"] and r["client"] == row["client"]
                         and not r["batching"])
        row["throughput_vs_unbatched"] = row["throughput_rps"] / unbatched["throughput_rps"]

    meta = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version(),
            "clients": args.clients, "requests_per_client": args.requests, "repeats": args.repeats,
            "batching_parameters": BATCHING, "inprocess_p50_ms": base_ms, "inprocess_batch16_p50_ms": batch16_ms,
            "model": "Conv(32)-Conv(64,s2)-Conv(64,s2)-GAP-Dense(10), input 1x64x64x3 float32"}
    lines = [f"# Serving load: small CNN, {args.clients} concurrent clients, CPU ({os.cpu_count()} cores)", "",
             f"Medians of {args.repeats} interleaved repeats, {args.clients} clients x {args.requests} batch-1 "
             f"predict requests each, clients and server in one process on loopback; TF {tf.__version__}, "
             f"Keras {keras.__version__}. Model called in-process (baseline): p50 {base_ms:.2f} ms at batch 1, "
             f"{batch16_ms:.2f} ms at batch 16, i.e. {batch16_ms / 16:.2f} ms per row (the model time batching "
             f"could save per request is the difference, {base_ms - batch16_ms / 16:.2f} ms). Mean batch = "
             f"requests per model call during the {args.clients}-client runs. "
             f"overhead = p50 at 1 client - in-process p50. Batching: `{BATCHING}`.", "",
             "| client | protocol | batching | p50 ms | p99 ms | req/s | x unbatched | mean batch "
             "| p50 1 client ms | overhead ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['client']} | {r['protocol']} | {'on' if r['batching'] else 'off'} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['throughput_rps']:.0f} | {r['throughput_vs_unbatched']:.2f} | "
                     f"{r['mean_batch_size']:.1f} | {r['p50_1_client_ms']:.2f} | {r['overhead_ms']:.2f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    results = pathlib.Path(args.results_dir)
    results.mkdir(exist_ok=True)
    (results / "serving_load.md").write_text(table)
    (results / "serving_load.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
