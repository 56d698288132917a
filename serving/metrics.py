"""Request metrics in TF Serving's names, and their Prometheus text exposition.

`--monitoring_config_file` with `prometheus_config { enable: true path: "..." }` serves them
on the REST port at that path, names with `/` turned into `:` like the real server:
`:tensorflow:serving:request_count{model_name,status}` (counter) and
`:tensorflow:serving:request_latency{model_name,API,entrypoint}` (histogram, microseconds,
TF Serving's exponential buckets 10 * 1.8^i, i < 33). Both count every Predict, Classify,
Regress and MultiInference request on REST and gRPC. Version loads that replay warmup records
add to `:tensorflow:serving:model_warmup_latency{model_path,status}` (histogram, microseconds,
same buckets), process-wide like TF Serving's monitoring cells; every server renders it.
"""

import threading

from serving.errors import ServingError

DEFAULT_PATH = "/monitoring/prometheus/metrics"
LATENCY_BUCKETS_US = [10.0 * 1.8**i for i in range(33)]
REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"
WARMUP_LATENCY = "/tensorflow/serving/model_warmup_latency"

_warmup_lock = threading.Lock()
_warmup_latency = {}  # (model_path, status) -> [bucket counts..., sum_us, count]


def _observe(cell, micros):
    for i, bound in enumerate(LATENCY_BUCKETS_US):
        if micros <= bound:
            cell[i] += 1
            break
    cell[-2] += micros
    cell[-1] += 1


def record_warmup(model_path, status, seconds):
    """One warmup of the version at `model_path`, ended with `status` ("OK" or "CODE: message")."""
    with _warmup_lock:
        cell = _warmup_latency.setdefault(
            (str(model_path), status), [0] * len(LATENCY_BUCKETS_US) + [0.0, 0]
        )
        _observe(cell, seconds * 1e6)


def _histogram_lines(name, base, cell):
    lines, cumulative = [], 0
    for bound, n in zip(LATENCY_BUCKETS_US, cell):
        cumulative += n
        lines.append(f"{name}_bucket{_labels(base + [('le', _number(bound))])} {cumulative}")
    lines.append(f"{name}_bucket{_labels(base + [('le', '+Inf')])} {cell[-1]}")
    lines.append(f"{name}_sum{_labels(base)} {_number(cell[-2])}")
    lines.append(f"{name}_count{_labels(base)} {cell[-1]}")
    return lines


def read_monitoring_path(path):
    """The Prometheus path of a text-format `MonitoringConfig` file, or None when it is not
    enabled; ValueError for a file that is not a MonitoringConfig."""
    from serving.config_protos import read_monitoring_config

    config = read_monitoring_config(path)
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    metrics_path = prometheus.path or DEFAULT_PATH
    if not metrics_path.startswith("/"):
        raise ValueError(f"{path}: prometheus_config.path must start with '/': {metrics_path!r}")
    return metrics_path


def _number(value):
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _labels(pairs):
    def escape(text):
        return str(text).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs) + "}"


class Metrics:
    """Thread-safe request counters and latency histograms of one server."""

    def __init__(self, model_filter=None):
        """`model_filter(name)`: whether requests naming `name` are counted. A server passes
        "is a configured model", so that requests for unknown names (any number of them) add
        no state and no lines to the metrics page."""
        self.model_filter = model_filter
        self._lock = threading.Lock()
        self._counts = {}  # (model_name, status) -> int
        self._latency = {}  # (model_name, API, entrypoint) -> [bucket counts..., sum_us, count]

    def record(self, model_name, api, entrypoint, status, seconds):
        if self.model_filter is not None and not self.model_filter(model_name):
            return
        micros = seconds * 1e6
        with self._lock:
            key = (model_name, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            cell = self._latency.setdefault(
                (model_name, api, entrypoint), [0] * len(LATENCY_BUCKETS_US) + [0.0, 0]
            )
            _observe(cell, micros)

    def request_count(self, model_name, status):
        with self._lock:
            return self._counts.get((model_name, status), 0)

    def render(self):
        """Prometheus text exposition format 0.0.4."""
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted((k, list(v)) for k, v in self._latency.items())
        count_name = REQUEST_COUNT.replace("/", ":")
        latency_name = REQUEST_LATENCY.replace("/", ":")
        lines = [f"# TYPE {count_name} counter"]
        for (model, status), value in counts:
            lines.append(
                f"{count_name}{_labels([('model_name', model), ('status', status)])} {value}"
            )
        lines.append(f"# TYPE {latency_name} histogram")
        for (model, api, entrypoint), cell in latency:
            base = [("model_name", model), ("API", api), ("entrypoint", entrypoint)]
            lines.extend(_histogram_lines(latency_name, base, cell))
        with _warmup_lock:
            warmup = sorted((k, list(v)) for k, v in _warmup_latency.items())
        warmup_name = WARMUP_LATENCY.replace("/", ":")
        lines.append(f"# TYPE {warmup_name} histogram")
        for (model_path, status), cell in warmup:
            lines.extend(
                _histogram_lines(
                    warmup_name, [("model_path", model_path), ("status", status)], cell
                )
            )
        return "\n".join(lines) + "\n"


def status_of(error):
    """The canonical status name a request ended with."""
    if error is None:
        return "OK"
    if isinstance(error, ServingError):
        return error.code
    return "INTERNAL"
