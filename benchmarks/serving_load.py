"""Serving under load: latency and throughput of this project's TF-Serving-compatible server.

Two small CNNs are exported with `serving.export` and served on loopback by `serving.Server`
in this process, with and without dynamic batching:

- `stn_cnn`: the zoo's ST-CNN with its shipped `rts_mnist` weights (42x42x1, 87k parameters),
  the model the README's main job serves;
- `gap_cnn`: Conv(32)-Conv(64, s2)-Conv(64, s2)-GAP-Dense(10) on 64x64x3 (57k parameters),
  random weights (the model of this benchmark's earlier tables).

The clients run in their own processes on their own cores (the second half of the CPUs; the
server keeps the first half), as real clients run on their own machines: in earlier tables they
shared the server's process, GIL and cores. They send batch-1 predict requests over REST or gRPC:

- `serving.Client`: 4 processes x 4 threads, each thread one `serving.Client` call at a time;
- `load generator`: one asyncio process keeping 16 requests in flight with one request body
  encoded once (what wrk or ghz do), so the rows measure the server rather than the client.

Every configuration runs `--repeats` times in turn (interleaved) and the table shows medians:
p50/p99 latency over all requests of a repeat and throughput (requests / wall time from the
first request sent to the last answer). The baseline is the same SavedModel called in-process
(its `serving_default` signature, batch 1 and batch 16), measured in the same run: the
per-request overhead is the served p50 at 1 client minus the in-process batch-1 p50.

Usage: `python benchmarks/serving_load.py [--clients 16] [--requests 100] [--rest-requests 25]
[--repeats 3] [--models stn_cnn gap_cnn] [--no-pin]`. Writes benchmarks/results/serving_load.md and .json.
"""

import argparse
import asyncio
import json
import multiprocessing
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
# `--batching_parameters_file` contents; the runs differ only in how long a batch waits to fill
BATCHING = {
    f"{timeout // 1000} ms": (
        f"max_batch_size {{ value: 16 }} batch_timeout_micros {{ value: {timeout} }} "
        "max_enqueued_batches { value: 100 } num_batch_threads { value: 2 }"
    )
    for timeout in (2000, 5000)
}
CLIENT_KINDS = ("serving.Client", "load generator")
CLIENT_PROCESSES = 4  # serving.Client rows: the clients are spread over this many processes
MODELS = {
    "stn_cnn": "zoo stn_cnn, weights rts_mnist, input 1x42x42x1 float32",
    "gap_cnn": "Conv(32)-Conv(64,s2)-Conv(64,s2)-GAP-Dense(10), input 1x64x64x3 float32",
}


def gap_cnn():
    import keras

    inputs = keras.Input((64, 64, 3), name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def build_model(name):
    if name == "gap_cnn":
        return gap_cnn()
    import zoo

    return zoo.load(name, weights="rts_mnist")


# -- client processes -------------------------------------------------------------------------


def _encoded_request(protocol, model, input_name, image):
    """The body a load generator sends: the request `serving.Client` would build, encoded once."""
    if protocol == "rest":
        from serving.client import _dumps, _json_value

        # columnar float text, as serving.Client writes it
        return _dumps({"inputs": {input_name: _json_value(image)}})
    from tensorflow_serving.apis import predict_pb2

    from serving.tensor_proto import make_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    make_tensor_proto(image, request.inputs[input_name])
    return request


def _threaded_clients(protocol, address, model, input_name, image, threads, requests):
    """`threads` threads x `requests` serving.Client predicts: (latencies, first send, last answer)."""
    from serving import Client

    client = Client(**{protocol: address}, timeout=60, retries=0)
    client.predict(model, {input_name: image})  # fetches and caches the signature
    latencies, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(threads + 1)

    def worker():
        mine = []
        barrier.wait()
        for _ in range(requests):
            started = time.perf_counter()
            try:
                client.predict(model, {input_name: image})
            except Exception as error:  # counted and reported
                errors.append(repr(error))
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in pool:
        thread.join()
    client.close()
    return latencies, errors, started, time.monotonic()


async def _generated_load(protocol, address, model, input_name, image, concurrency, requests):
    """`concurrency` requests in flight, `requests` each, one pre-encoded body."""
    body = _encoded_request(protocol, model, input_name, image)
    latencies, errors = [], []
    if protocol == "rest":
        import aiohttp

        url = f"http://{address}/v1/models/{model}:predict"
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def call():
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                payload = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")

        close = session.close
    else:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        from serving.grpc_api import MAX_MESSAGE_OPTIONS

        channel = grpc.aio.insecure_channel(address, options=MAX_MESSAGE_OPTIONS)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def call():
            await stub.Predict(body, timeout=60)

        close = channel.close

    async def worker(count):
        for _ in range(count):
            started = time.perf_counter()
            try:
                await call()
            except Exception as error:  # counted and reported
                errors.append(repr(error))
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*[worker(1) for _ in range(min(concurrency, 4))])  # connections up
    latencies.clear()
    started = time.monotonic()
    await asyncio.gather(*[worker(requests) for _ in range(concurrency)])
    finished = time.monotonic()
    await close()
    return latencies, errors, started, finished


def _client_process(connection, cpus):
    """Runs client jobs sent by the benchmark until it sends None."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    while True:
        job = connection.recv()
        if job is None:
            return
        kind, args = job
        try:
            if kind == "serving.Client":
                result = _threaded_clients(*args)
            else:
                result = asyncio.run(_generated_load(*args))
        except Exception as error:
            result = ([], [repr(error)], 0.0, 0.0)
        connection.send(result)


class ClientProcesses:
    """Client worker processes (pinned to `cpus`); `run` gives process i the job `jobs[i]`."""

    def __init__(self, count, cpus=None):
        context = multiprocessing.get_context("spawn")
        self.connections, self.processes = [], []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_client_process, args=(child, cpus), daemon=True)
            process.start()
            self.connections.append(parent)
            self.processes.append(process)

    def run(self, kind, jobs):
        """Runs `jobs[i]` in process i at once; (latencies, wall seconds) over all of them."""
        for connection, args in zip(self.connections, jobs):
            connection.send((kind, args))
        results = [connection.recv() for connection in self.connections[: len(jobs)]]
        errors = [e for r in results for e in r[1]]
        if errors:
            raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
        latencies = [t for r in results for t in r[0]]
        return latencies, max(r[3] for r in results) - min(r[2] for r in results)

    def close(self):
        for connection in self.connections:
            connection.send(None)
        for process in self.processes:
            process.join(timeout=30)


def run_load(pool, kind, protocol, address, model, input_name, image, clients, requests):
    if kind == "serving.Client":
        processes = min(CLIENT_PROCESSES, clients)
        share = [clients // processes + (i < clients % processes) for i in range(processes)]
        jobs = [(protocol, address, model, input_name, image, n, requests) for n in share]
    else:
        jobs = [(protocol, address, model, input_name, image, clients, requests)]
    return pool.run(kind, jobs)


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


# -- the benchmark -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--requests", type=int, default=100, help="gRPC requests per client per repeat"
    )
    parser.add_argument(
        "--rest-requests", type=int, default=25, help="REST requests per client per repeat"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--results-dir", default=str(RESULTS), help="where serving_load.md/.json go"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let server and clients share every core instead of splitting them",
    )
    args = parser.parse_args(argv)

    # Clients get their own cores, as on their own machines; otherwise the clients' CPU time is
    # taken from the server's and the table measures the machine rather than the server.
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpus, client_cpus = (
        (cpus[: len(cpus) // 2], cpus[len(cpus) // 2 :]) if len(cpus) > 1 else (cpus, cpus)
    )
    if args.no_pin:
        server_cpus = client_cpus = cpus
    pool = ClientProcesses(
        CLIENT_PROCESSES, client_cpus
    )  # started first: they import TensorFlow meanwhile
    if server_cpus != cpus:
        os.sched_setaffinity(0, server_cpus)  # before TensorFlow sizes its thread pools

    import keras
    import tensorflow as tf
    from google.protobuf import text_format

    from serving.batching import BatchingOptions
    from serving.config_protos import BatchingParameters
    from serving.models import single_model_config
    from serving.saved_model import export
    from serving.server import Server

    keras.utils.set_random_seed(0)
    workdir = tempfile.mkdtemp(prefix="serving_load_")
    models = {}
    for name in args.models:
        model = build_model(name)
        export(model, workdir, name, version=1)
        signature = tf.saved_model.load(os.path.join(workdir, name, "1")).signatures[
            "serving_default"
        ]
        input_name = next(iter(signature.structured_input_signature[1]))
        shape = tuple(model.input_shape[1:])
        image = np.random.default_rng(0).random((1,) + shape, dtype=np.float32)
        models[name] = {
            "signature": signature,
            "input": input_name,
            "image": image,
            "params": model.count_params(),
        }

    def inprocess_p50(name, batch, n):
        signature, tensor = (
            models[name]["signature"],
            tf.constant(np.repeat(models[name]["image"], batch, axis=0)),
        )
        key = models[name]["input"]
        for _ in range(10):
            signature(**{key: tensor})
        times = []
        for _ in range(n):
            started = time.perf_counter()
            next(iter(signature(**{key: tensor}).values())).numpy()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    config = single_model_config(args.models[0], os.path.join(workdir, args.models[0]))
    for name in args.models[1:]:
        entry = config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = (
            name,
            os.path.join(workdir, name),
            "tensorflow",
        )
    # as the `serve` command runs it (freeze_gc)
    servers = {
        "off": Server(
            config, rest_api_port=0, port=0, host="127.0.0.1", poll_wait_seconds=0, freeze_gc=True
        ).start()
    }
    for variant, text in BATCHING.items():
        servers[variant] = Server(
            config,
            rest_api_port=0,
            port=0,
            host="127.0.0.1",
            poll_wait_seconds=0,
            batching=BatchingOptions(text_format.Parse(text, BatchingParameters())),
            freeze_gc=True,
        ).start()

    configs = [
        {"model": m, "client": kind, "protocol": protocol, "batching": batched}
        for m in args.models
        for kind in CLIENT_KINDS
        for protocol in ("rest", "grpc")
        for batched in servers
    ]

    def load(cfg, clients, requests):
        server = servers[cfg["batching"]]
        address = f"127.0.0.1:{server.rest_api_port if cfg['protocol'] == 'rest' else server.port}"
        entry = models[cfg["model"]]
        return run_load(
            pool,
            cfg["client"],
            cfg["protocol"],
            address,
            cfg["model"],
            entry["input"],
            entry["image"],
            clients,
            requests,
        )

    for cfg in configs:
        load(cfg, 4, 3)  # warm-up: connections, signatures, the server's first calls
    samples = [{"p50": [], "p99": [], "rps": [], "p50_1": [], "batch": []} for _ in configs]
    baseline = {name: {"b1": [], "b16": []} for name in args.models}
    for _ in range(args.repeats):
        for name in args.models:
            baseline[name]["b1"].append(inprocess_p50(name, 1, 200))
            baseline[name]["b16"].append(inprocess_p50(name, 16, 40))
        for cfg, sample in zip(configs, samples):
            requests = args.rest_requests if cfg["protocol"] == "rest" else args.requests
            lat1, _ = load(cfg, 1, requests)
            sample["p50_1"].append(statistics.median(lat1))
            batcher = servers[cfg["batching"]].batcher
            calls_before = batcher.batches_run if batcher is not None else 0
            latencies, wall = load(cfg, args.clients, requests)
            # every request is one row, and the batcher counts its model calls
            calls = batcher.batches_run - calls_before if batcher is not None else len(latencies)
            sample["batch"].append(len(latencies) / calls if calls else float("nan"))
            sample["p50"].append(percentile(latencies, 50))
            sample["p99"].append(percentile(latencies, 99))
            sample["rps"].append(len(latencies) / wall)
    pool.close()
    for server in servers.values():
        server.stop()

    inprocess = {
        name: {k: statistics.median(v) * 1e3 for k, v in b.items()} for name, b in baseline.items()
    }
    rows = []
    for cfg, sample in zip(configs, samples):
        s = {k: statistics.median(v) for k, v in sample.items()}
        rows.append(
            {
                **cfg,
                "clients": args.clients,
                "p50_ms": s["p50"] * 1e3,
                "p99_ms": s["p99"] * 1e3,
                "throughput_rps": s["rps"],
                "p50_1_client_ms": s["p50_1"] * 1e3,
                "overhead_ms": s["p50_1"] * 1e3 - inprocess[cfg["model"]]["b1"],
                "mean_batch_size": s["batch"],
                "throughput_rps_repeats": sample["rps"],
            }
        )
    for row in rows:
        unbatched = next(
            r
            for r in rows
            if r["batching"] == "off"
            and all(r[k] == row[k] for k in ("model", "client", "protocol"))
        )
        row["throughput_vs_unbatched"] = row["throughput_rps"] / unbatched["throughput_rps"]
        # per repeat: batched and unbatched runs of one repeat ran back to back
        row["vs_unbatched_repeats"] = [
            a / b
            for a, b in zip(row["throughput_rps_repeats"], unbatched["throughput_rps_repeats"])
        ]

    meta = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "clients": args.clients,
        "requests_per_client": {"grpc": args.requests, "rest": args.rest_requests},
        "repeats": args.repeats,
        "client_processes": CLIENT_PROCESSES,
        "batching_parameters": BATCHING,
        "server_cpus": server_cpus,
        "client_cpus": client_cpus,
        "inprocess_ms": inprocess,
        "models": {m: MODELS[m] for m in args.models},
        "params": {m: models[m]["params"] for m in args.models},
    }
    lines = [
        f"# Serving load: small CNNs, {args.clients} concurrent clients, CPU ({os.cpu_count()} cores)",
        "",
        f"Medians of {args.repeats} interleaved repeats, {args.clients} clients x {args.requests} (gRPC) or "
        f"{args.rest_requests} (REST) batch-1 predict requests each; the server (`freeze_gc`, as `serve` runs it) "
        f"in the benchmark's process on CPUs {server_cpus}, the clients in their own processes on CPUs "
        f"{client_cpus} (serving.Client: {CLIENT_PROCESSES} processes x {args.clients // CLIENT_PROCESSES} threads; load "
        f"generator: one asyncio process, {args.clients} requests in flight, body encoded once), loopback; "
        f"TF {tf.__version__}, Keras {keras.__version__}. Batching `N ms`: `{BATCHING['2 ms']}`, with "
        "`batch_timeout_micros` N ms. "
        "x unbatched: throughput over the same client's unbatched row (each repeat's ratio in brackets). "
        "Mean batch: requests per model call. Overhead: p50 at 1 client minus the in-process batch-1 p50.",
        "",
        "| model | in-process p50 batch 1 ms | batch 16 ms per row | params |",
        "|---|---|---|---|",
    ]
    for name in args.models:
        lines.append(
            f"| {name} ({MODELS[name]}) | {inprocess[name]['b1']:.2f} | {inprocess[name]['b16'] / 16:.2f} | "
            f"{models[name]['params']:,} |"
        )
    lines += [
        "",
        "| model | client | protocol | batching | p50 ms | p99 ms | req/s | x unbatched | mean batch "
        "| p50 1 client ms | overhead ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['throughput_vs_unbatched']:.2f}"
        if r["batching"] != "off":
            ratio += " (" + ", ".join(f"{x:.2f}" for x in r["vs_unbatched_repeats"]) + ")"
        lines.append(
            f"| {r['model']} | {r['client']} | {r['protocol']} | {r['batching']} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput_rps']:.0f} | {ratio} | "
            f"{r['mean_batch_size']:.1f} | {r['p50_1_client_ms']:.2f} | {r['overhead_ms']:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    results = pathlib.Path(args.results_dir)
    results.mkdir(exist_ok=True)
    (results / "serving_load.md").write_text(table)
    (results / "serving_load.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
