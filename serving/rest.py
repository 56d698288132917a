"""TF Serving's REST API (`/v1/models/...`) as an aiohttp application.

Routes, JSON and error messages follow `model_servers/http_rest_api_handler.cc`; models run
in a thread pool, never on the event loop, and every failure becomes `{"error": ...}` with
the HTTP status of its canonical code.
"""

import asyncio
import json
import logging
import re
import threading
import time
import urllib.parse
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiohttp import web

from serving import dtypes, json_tensor
from serving.errors import ServingError, invalid
from serving.handlers import Handlers, example_response
from serving.metrics import Metrics, status_of
from serving.models import call_deadline

log = logging.getLogger("serving")

# RE2's \d is ASCII only: re.ASCII keeps "٣" (Arabic-Indic three) from being read as a version
PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE | re.ASCII,
)
STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE | re.ASCII,
)
API_KEY = web.AppKey("api", object)
V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
JSON_HEADERS = {"Content-Type": "application/json"}  # exactly, as TF Serving sends it
# A gzip body (Content-Encoding: gzip) inflates to at most this many bytes, TF Serving's limit
# (net_http's ZLib::kMaxUncompressedBytes); beyond it the request is refused.
MAX_INFLATED_BYTES = 100 * 1024 * 1024
_INFLATE_STEP = 1 << 20  # inflate at most this much between two turns of the event loop


def _json_response(text, status=200):
    return web.Response(
        body=text.encode("utf-8", "surrogatepass"), status=status, headers=JSON_HEADERS
    )


def _error(error):
    return _json_response(json.dumps({"error": error.message}), error.http_status)


def _message_dict(message):
    """A response proto as TF Serving's REST API writes it (every field, proto names)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def _parse_version(text):
    """An int64 version from the URL's digits, or INVALID_ARGUMENT as absl::SimpleAtoi fails."""
    if text is None:
        return None
    if len(text.lstrip("0")) > 19 or int(text) >= 2**63:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return int(text)


def parse_model_info(method, path):
    """What TF Serving's `ParseModelInfo` reads from a request path: (parsed, model name,
    version, version label, verb or subresource). `parsed` is False when the path is none of
    the API's; names and labels are percent-decoded; a version beyond int64 is
    INVALID_ARGUMENT."""
    match = None
    if method == "POST":
        match = PREDICT_RE.fullmatch(path)
    elif method == "GET":
        match = STATUS_RE.fullmatch(path)
    if match is None:
        return False, "", None, None, None
    name, version, label, action = match.groups()
    unquote = urllib.parse.unquote
    return (
        True,
        unquote(name) if name else "",
        _parse_version(version),
        unquote(label) if label else None,
        action.lower() if action else None,
    )


async def read_body(request, limit=None):
    """The request body; with `Content-Encoding: gzip` (and only then) inflated as it streams
    in, at most `limit` (default `MAX_INFLATED_BYTES`) bytes, else INVALID_ARGUMENT. The
    event loop gets a turn after every `_INFLATE_STEP` inflated bytes."""
    if "gzip" not in request.headers.get("Content-Encoding", "").lower():
        return await request.read()
    limit = MAX_INFLATED_BYTES if limit is None else limit
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    body = bytearray()

    def too_big():
        return invalid(
            f"The gzip request body inflates to more than {limit} bytes, the most "
            "this server accepts"
        )

    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            data = chunk
            while data and not inflater.eof:
                body += inflater.decompress(data, _INFLATE_STEP)
                if len(body) > limit:
                    raise too_big()
                data = inflater.unconsumed_tail
                if data:
                    await asyncio.sleep(0)
            if inflater.eof:
                break
        body += inflater.flush()
    except zlib.error as error:
        raise invalid(f"Failed to decompress the gzip request body: {error}") from None
    if len(body) > limit:
        raise too_big()
    if not inflater.eof:
        raise invalid(
            "Failed to decompress the gzip request body: it ends before the gzip stream does"
        )
    return bytes(body)


# the input types the fast path reads (what nearly every model takes); their numpy dtype and
# the JSON values they accept are in serving.dtypes
_FAST_DTYPES = ("float", "double", "int32", "int64")
_JSON_LEAF_TYPES = {"float": {float, int}, "integer": {int}}


def _dense_numeric_request(doc, input_dtypes):
    """(tensors, row_format) for the common predict body: one float/double/int32/int64 input
    given (row or columnar, bare or by name) as a dense nested list of plain JSON numbers;
    numpy converts it in C instead of a Python call per value. Returns None for anything else,
    or for any value the conversion would reject, so that `json_tensor.predict_request`
    handles (and words) it exactly as TF Serving does; on the values accepted here both paths
    give the same array."""
    if len(input_dtypes) != 1:
        return None
    ((name, dtype),) = input_dtypes.items()
    if dtype not in _FAST_DTYPES or ("instances" in doc) == ("inputs" in doc):
        return None
    row = "instances" in doc
    value = doc["instances"] if row else doc["inputs"]
    if not row and isinstance(
        value, dict
    ):  # columnar {"inputs": {name: ...}}; other keys are ignored
        if name not in value or "b64" in value:
            return None
        value = value[name]
    if not isinstance(value, list) or not value:
        return None
    typed = dtypes.by_tf_name(dtype)
    leaf_types, limit = _JSON_LEAF_TYPES[typed.json], typed.json_range
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
        if typed.json == "float":
            with np.errstate(
                over="ignore"
            ):  # rounded, beyond float32's range +-inf, like RapidJSON
                array = flat.astype(np.float64).astype(typed.numpy)
        else:
            wide = flat.astype(np.int64)  # OverflowError beyond int64
            if wide.min() < limit[0] or wide.max() > limit[1]:
                return None
            array = wide.astype(typed.numpy)
    except (OverflowError, TypeError, ValueError):
        return None
    return {name: array.reshape(cells.shape)}, row


_call_local = threading.local()  # the CancellationManager of the model call this thread makes
_cancellation_lock = threading.Lock()
_cancellation_installed = False


def _cancellation_manager():
    """A new TF CancellationManager, which cancels the TF2 function calls this thread makes
    while `_call_local.manager` holds it. TF reads the manager of a call from a process-wide
    slot (`cancellation.context()`); it is made per thread here, so that concurrent requests
    never cancel each other's calls (a slot set by TF's own context manager still works)."""
    global _cancellation_installed
    from tensorflow.python.eager import cancellation

    with _cancellation_lock:
        if not _cancellation_installed:
            process_wide = cancellation.context

            def context():
                manager = getattr(_call_local, "manager", None)
                return manager if manager is not None else process_wide()

            cancellation.context = context
            _cancellation_installed = True
    return cancellation.CancellationManager()


class ModelClock:
    """The deadline of one REST request's model call (`--rest_api_timeout_in_ms`), shared by
    the event loop, which answers 504 when it passes, and the worker thread, which makes the
    call through `run`. Like TF Serving's RunOptions timeout it covers the model call only,
    not parsing or formatting. An abandoned request never starts its call, a TF2 call in
    progress is cancelled, and the result of any other is dropped without being formatted."""

    def __init__(self, timeout_s, loop):
        self.timeout_s = timeout_s
        self._loop = loop
        self._started = asyncio.Event()
        self._finished = asyncio.Event()
        self._start = None
        self._lock = threading.Lock()
        self._abandoned = False
        self._manager = None

    def _expired(self):
        return ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded")

    def run(self, call, *args, **kwargs):
        with self._lock:
            if self._abandoned:
                raise self._expired()
            self._start = time.monotonic()
            if self.timeout_s:
                self._manager = _cancellation_manager()
        self._notify(self._started)
        previous, _call_local.manager = getattr(_call_local, "manager", None), self._manager
        call_deadline.timeout_ms = int(self.timeout_s * 1000) if self.timeout_s else None
        try:
            result = call(*args, **kwargs)
        except ServingError as error:
            if self._abandoned or error.code == "DEADLINE_EXCEEDED":
                raise self._expired() from None
            raise
        finally:
            _call_local.manager = previous
            call_deadline.timeout_ms = None
            self._notify(self._finished)
        if self._abandoned:
            raise self._expired()
        return result

    def _notify(self, event):
        try:
            self._loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop has closed: the server is stopping
            pass

    def abandon(self):
        """The client has its answer (or is gone): stop the call, or never start it."""
        with self._lock:
            self._abandoned = True
            manager = self._manager
        if manager is not None:
            manager.start_cancel()

    async def wait(self, future):
        if not self.timeout_s:
            return await future
        started = asyncio.ensure_future(self._started.wait())
        try:
            await asyncio.wait({future, started}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if future.done():
            return future.result()
        remaining = self.timeout_s - (time.monotonic() - self._start)
        finished = asyncio.ensure_future(self._finished.wait())
        try:
            done, _ = await asyncio.wait(
                {future, finished}, timeout=max(remaining, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            finished.cancel()
        if not done:
            self.abandon()
            raise self._expired()
        return await future  # the call is over: formatting is not timed


class RestApi:
    """Request handlers over a `ModelManager`."""

    def __init__(self, manager, timeout_s=30.0, workers=4, metrics=None, metrics_path=None):
        self.manager = manager
        self.timeout_s = timeout_s
        self.metrics = metrics if metrics is not None else Metrics()
        self.handlers = Handlers(manager, self.metrics)
        self.metrics_path = metrics_path
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serving-rest")

    async def dispatch(self, request):
        path = request.rel_url.raw_path
        if self.metrics_path is not None and path == self.metrics_path and request.method == "GET":
            return web.Response(
                text=self.metrics.render(),
                content_type="text/plain",
                headers={"X-Prometheus-Format": "0.0.4"},
            )
        if not V1_RE.fullmatch(path):
            return web.Response(status=404, text="404 Not Found")
        try:
            if request.method == "OPTIONS":  # a CORS preflight, answered as TF Serving does
                if re.search(r"https?://", request.headers.get("Origin", "")):
                    return _json_response("")
                raise ServingError(
                    "FAILED_PRECONDITION", "Origin header is missing in CORS preflight"
                )
            body = await read_body(request)
            return await self._route(request.method, path, body)
        except ServingError as error:
            return _error(error)
        except Exception:  # a bug, never the client's input: no Python internals in the reply
            log.exception("REST request %s %s failed", request.method, path[:256])
            return _error(ServingError("INTERNAL", "Internal error while processing the request"))

    async def _route(self, method, path, body):
        parsed, name, version, label, action = parse_model_info(method, path)
        if parsed and method == "POST":
            started, error = time.perf_counter(), None
            try:
                return await self._run(
                    self._predict_sync if action == "predict" else self._examples_sync,
                    name,
                    version,
                    label,
                    action,
                    body,
                )
            except asyncio.CancelledError:
                error = ServingError("CANCELLED", "Request cancelled")
                raise
            except Exception as failure:
                error = failure
                raise
            finally:
                if name in self.manager.servables:  # per-name state only for models that exist
                    self.metrics.record(
                        name,
                        action.capitalize(),
                        "REST",
                        status_of(error),
                        time.perf_counter() - started,
                    )
        if parsed and method == "GET":
            if not name:
                raise invalid("Missing model name in request.")
            if action == "metadata":
                return _json_response(self._metadata(name, version, label))
            return _json_response(self._status(name, version, label))
        raise invalid(f"Malformed request: {method} {path}")

    async def _run(self, fn, *args):
        """`fn(*args, clock)` in the thread pool; `clock` times its model call only (parsing and
        formatting are not timed, as in TF Serving) and answers DEADLINE_EXCEEDED when the call
        outlives `timeout_s`. Work still queued when the request is abandoned never runs."""
        clock = ModelClock(self.timeout_s, asyncio.get_running_loop())
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args, clock)
        try:
            return _json_response(await clock.wait(future))
        except BaseException:
            clock.abandon()
            future.cancel()
            raise

    def _predict_sync(self, name, version, label, verb, body, clock):
        doc = json_tensor.parse_json(body)
        signature_name = json_tensor.signature_name(doc)
        with self.manager.use(name, version, label) as servable:
            key, signature = servable.signature(signature_name)
            input_dtypes = servable.input_dtypes(signature)
            fast = _dense_numeric_request(doc, input_dtypes)
            if fast is None:
                fast = json_tensor.predict_request(doc, input_dtypes)
            tensors, row = fast
            outputs = clock.run(servable.run, signature, tensors, key=key)
        return json_tensor.predict_response_json(outputs, row)

    def _examples_sync(self, name, version, label, verb, body, clock):
        import tensorflow as tf

        doc = json_tensor.parse_json(body)
        signature_name = json_tensor.signature_name(doc)
        with self.manager.use(name, version, label) as servable:
            key, signature = servable.signature(signature_name)
            serialized = json_tensor.examples_request(doc, verb, tf.train.Example)
            outputs = clock.run(servable.run_examples, key, signature, verb, serialized)
        response = example_response(verb, servable, key, outputs)
        if verb == "regress":
            return json_tensor.regress_response_json(response.result)
        return json_tensor.classify_response_json(response.result)

    def _status(self, name, version, label):
        response = self.handlers.model_status(name, version, label)
        return json.dumps(_message_dict(response), indent=1)

    def _metadata(self, name, version, label):
        from tensorflow_serving.apis import get_model_metadata_pb2

        response = self.handlers.model_metadata(name, version, label)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sigmap)
        doc = {
            "model_spec": _message_dict(response.model_spec),
            "metadata": {"signature_def": _message_dict(sigmap)},
        }
        return json.dumps(doc, indent=1)

    def close(self):
        self.executor.shutdown(wait=False, cancel_futures=True)


def make_app(manager, timeout_s=30.0, workers=4, metrics=None, metrics_path=None):
    """The aiohttp application serving `manager` (a `serving.models.ModelManager`); with
    `metrics_path`, `metrics` (a `serving.metrics.Metrics`) in Prometheus format at that path."""
    api = RestApi(
        manager, timeout_s=timeout_s, workers=workers, metrics=metrics, metrics_path=metrics_path
    )
    # bodies are inflated here (read_body), with TF Serving's cap, never by aiohttp
    app = web.Application(client_max_size=2**31 - 1, handler_args={"auto_decompress": False})
    app.router.add_route("*", "/{tail:.*}", api.dispatch)

    async def _close(_app):
        api.close()

    app.on_cleanup.append(_close)
    app[API_KEY] = api
    return app
