"""TF Serving's REST API (`/v1/models/...`) as an aiohttp application.

Routes, JSON and error messages follow `model_servers/http_rest_api_handler.cc`; models run
in a thread pool, never on the event loop, and every failure becomes `{"error": ...}` with
the HTTP status of its canonical code.
"""

import asyncio
import gzip
import json
import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiohttp import web

from serving import json_tensor
from serving.errors import CODE_NAMES, ServingError, invalid
from serving.metrics import Metrics, status_of

PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
API_KEY = web.AppKey("api", object)
CODE_NUMBERS = {name: number for number, name in CODE_NAMES.items()}
V1_RE = re.compile(r"/v1/.*", re.IGNORECASE)


def _json_response(text, status=200):
    return web.Response(text=text, status=status, content_type="application/json")


def _error(error):
    return _json_response(json.dumps({"error": error.message}), error.http_status)


def _parse_version(text):
    if text is None:
        return None
    version = int(text)
    if version >= 2**63:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return version


# signature dtype name -> (numpy dtype, accepted JSON leaf types, limit of an exact int / range)
_DENSE_DTYPES = {
    "float": (np.float32, {float, int}, 2**24 - 1), "double": (np.float64, {float, int}, 2**53 - 1),
    "int32": (np.int32, {int}, (-(2**31), 2**31 - 1)), "int64": (np.int64, {int}, (-(2**63), 2**63 - 1)),
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _dense_numeric_request(doc, dtypes):
    """(tensors, row_format) for the common predict body: one float/double/int32/int64 input
    given (row or columnar, bare or by name) as a dense nested list of plain JSON numbers;
    numpy converts it in C instead of a Python call per value. Returns None for anything else,
    or for any value the conversion would reject, so that `json_tensor.predict_request`
    handles (and words) it exactly as TF Serving does; on the values accepted here both paths
    give the same array."""
    if len(dtypes) != 1:
        return None
    (name, dtype), = dtypes.items()
    if dtype not in _DENSE_DTYPES or ("instances" in doc) == ("inputs" in doc):
        return None
    row = "instances" in doc
    value = doc["instances"] if row else doc["inputs"]
    if not row and isinstance(value, dict):  # columnar {"inputs": {name: ...}}; other keys are ignored
        if name not in value or "b64" in value:
            return None
        value = value[name]
    if not isinstance(value, list) or not value:
        return None
    numpy_dtype, leaf_types, limit = _DENSE_DTYPES[dtype]
    try:
        cells = np.array(value, dtype=object)  # ragged lists stay list cells, caught below
    except ValueError:
        return None
    if cells.size == 0:
        return None
    flat = cells.reshape(-1)
    types = set(map(type, flat))  # bool is its own type: true/false never pass as numbers
    if not types <= leaf_types:
        return None
    try:
        if numpy_dtype in (np.float32, np.float64):
            wide = flat.astype(np.float64)
            if int in types:
                is_int = np.fromiter(map(int.__instancecheck__, flat), dtype=bool, count=flat.size)
                if np.any(np.abs(wide[is_int]) > limit):
                    return None
            if numpy_dtype is np.float32 and float in types:
                finite = wide[np.isfinite(wide)]
                if finite.size and np.abs(finite).max() > _FLOAT32_MAX:
                    return None
            array = wide.astype(numpy_dtype)
        else:
            wide = flat.astype(np.int64)  # OverflowError beyond int64
            if wide.min() < limit[0] or wide.max() > limit[1]:
                return None
            array = wide.astype(numpy_dtype)
    except (OverflowError, TypeError, ValueError):
        return None
    return {name: array.reshape(cells.shape)}, row


class RestApi:
    """Request handlers over a `ModelManager`."""

    def __init__(self, manager, timeout_s=30.0, workers=4, metrics=None, metrics_path=None):
        self.manager = manager
        self.timeout_s = timeout_s
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics_path = metrics_path
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serving-rest")

    async def dispatch(self, request):
        path = request.rel_url.raw_path
        if self.metrics_path is not None and path == self.metrics_path and request.method == "GET":
            return web.Response(text=self.metrics.render(), content_type="text/plain",
                                headers={"X-Prometheus-Format": "0.0.4"})
        if not V1_RE.fullmatch(path):
            return web.Response(status=404, text="404 Not Found")
        try:
            body = await request.read()
            if body[:2] == b"\x1f\x8b":  # aiohttp may already have inflated a gzip body
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError):
                    raise invalid("Failed to decompress gzip request body")
            return await asyncio.wait_for(self._route(request.method, path, body), self.timeout_s)
        except ServingError as error:
            return _error(error)
        except asyncio.TimeoutError:
            return _error(ServingError("DEADLINE_EXCEEDED", "Request timed out"))
        except Exception as error:  # never crash on bad input
            return _error(ServingError("INTERNAL", f"{type(error).__name__}: {error}"))

    async def _route(self, method, path, body):
        unquote = urllib.parse.unquote
        match = PREDICT_RE.fullmatch(path)
        if method == "POST" and match:
            name, version, label, verb = match.groups()
            name, started, error = unquote(name), time.perf_counter(), None
            try:
                return await self._run(self._predict_sync if verb.lower() == "predict" else self._examples_sync,
                                       name, _parse_version(version),
                                       unquote(label) if label else None, verb.lower(), body)
            except asyncio.CancelledError:
                error = ServingError("DEADLINE_EXCEEDED", "Request timed out")
                raise
            except Exception as failure:
                error = failure
                raise
            finally:
                self.metrics.record(name, verb.capitalize(), "REST", status_of(error), time.perf_counter() - started)
        match = STATUS_RE.fullmatch(path)
        if method == "GET" and match:
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid("Missing model name in request.")
            name, version = unquote(name), _parse_version(version)
            label = unquote(label) if label else None
            if metadata:
                return _json_response(self._metadata(name, version, label))
            return _json_response(self._status(name, version, label))
        raise invalid(f"Malformed request: {method} {path}")

    async def _run(self, fn, *args):
        loop = asyncio.get_running_loop()
        return _json_response(await loop.run_in_executor(self.executor, fn, *args))

    def _predict_sync(self, name, version, label, verb, body):
        doc = json_tensor.parse_json(body)
        signature_name = json_tensor.signature_name(doc)
        with self.manager.use(name, version, label) as servable:
            key, signature = servable.signature(signature_name)
            dtypes = servable.input_dtypes(signature)
            fast = _dense_numeric_request(doc, dtypes)
            tensors, row = fast if fast is not None else json_tensor.predict_request(doc, dtypes)
            outputs = servable.run(signature, tensors, key=key)
        return json_tensor.predict_response_json(outputs, row)

    def _examples_sync(self, name, version, label, verb, body):
        import tensorflow as tf

        doc = json_tensor.parse_json(body)
        signature_name = json_tensor.signature_name(doc)
        with self.manager.use(name, version, label) as servable:
            key, signature = servable.signature(signature_name)
            serialized = json_tensor.examples_request(doc, verb, tf.train.Example)
            outputs = servable.run_examples(key, signature, verb, serialized)
        count = len(serialized)
        if verb == "regress":
            values = outputs["outputs"]
            return '{"results": [%s]}' % ", ".join(json_tensor.format_float(v) for v in values.reshape(-1))
        scores, classes = outputs.get("scores"), outputs.get("classes")
        results = []
        for i in range(count):
            row_scores = scores[i] if scores is not None else None
            row_classes = classes[i] if classes is not None else None
            width = len(row_scores) if row_scores is not None else len(row_classes)
            pairs = []
            for j in range(width):
                label_text = row_classes[j] if row_classes is not None else b""
                label_text = label_text.decode("utf-8", "replace") if isinstance(label_text, bytes) else str(label_text)
                score = json_tensor.format_float(row_scores[j]) if row_scores is not None else "0.0"
                pairs.append(f"[{json.dumps(label_text)}, {score}]")
            results.append("[" + ", ".join(pairs) + "]")
        return '{"results": [%s]}' % ", ".join(results)

    def _status(self, name, version, label):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in self.manager.status(name, version, label):
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            entry.status.error_code = CODE_NUMBERS.get(code, 2)
            entry.status.error_message = message
        return json.dumps(json_format.MessageToDict(
            response, always_print_fields_with_no_presence=True, preserving_proto_field_name=True), indent=1)

    def _metadata(self, name, version, label):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        servable = self.manager.resolve(name, version, label)
        spec = model_pb2.ModelSpec(name=name, signature_name="")
        spec.version.value = servable.version
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in servable.signatures.items():
            sigmap.signature_def[key].CopyFrom(sig)
        options = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        doc = {"model_spec": json_format.MessageToDict(spec, **options),
               "metadata": {"signature_def": json_format.MessageToDict(sigmap, **options)}}
        return json.dumps(doc, indent=1)

    def close(self):
        self.executor.shutdown(wait=False, cancel_futures=True)


def make_app(manager, timeout_s=30.0, workers=4, metrics=None, metrics_path=None):
    """The aiohttp application serving `manager` (a `serving.models.ModelManager`); with
    `metrics_path`, `metrics` (a `serving.metrics.Metrics`) in Prometheus format at that path."""
    api = RestApi(manager, timeout_s=timeout_s, workers=workers, metrics=metrics, metrics_path=metrics_path)
    app = web.Application(client_max_size=2**31 - 1)
    app.router.add_route("*", "/{tail:.*}", api.dispatch)

    async def _close(_app):
        api.close()

    app.on_cleanup.append(_close)
    app[API_KEY] = api
    return app
