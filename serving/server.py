"""A TF-Serving-compatible model server: `tensorflow_model_server`'s flags, gRPC and REST APIs.

`Server(config).start()` loads the models (the ports open once the initial versions are
loaded, like the real server), serves gRPC (`port`, grpc's thread pool) and REST
(`rest_api_port`, aiohttp in a background thread) over one model manager, and polls the base paths
for new versions every `file_system_poll_wait_seconds`; `stop()` shuts everything down.
"""

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
import threading
import time

from serving.errors import ServingError
from serving.models import ModelManager, read_model_config, single_model_config

log = logging.getLogger("serving")
V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
# http_rest_api_util.cc's AddCORSHeaders
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


class Server:
    def __init__(
        self,
        config,
        rest_api_port=8501,
        host="0.0.0.0",
        poll_wait_seconds=1.0,
        rest_api_timeout_in_ms=30000,
        port=8500,
        grpc_host=None,
        model_config_file=None,
        model_config_file_poll_wait_seconds=0,
        shutdown_grace_seconds=10.0,
        batching=None,
        monitoring_path=None,
        freeze_gc=False,
        grpc_socket_path=None,
        grpc_channel_arguments=(),
        grpc_max_threads=None,
        rest_api_num_threads=None,
        enable_grpc_healthcheck_service=False,
        enable_serialization_as_tensor_content=False,
        strict_start=False,
        manager_options=None,
        rest_api_enable_cors_support=False,
    ):
        """`batching`: a `serving.batching.BatchingOptions` (dynamic batching) or None;
        `monitoring_path`: serve Prometheus metrics on the REST port at this path, or None;
        `freeze_gc`: take the loaded models out of the garbage collector's view after each
        load (`serving.models.ModelManager`); the `serve` command turns it on, a process that
        does more than serve may leave it off.

        `grpc_socket_path`: also serve gRPC on this Unix socket (`port=None`: only there);
        `grpc_channel_arguments`: extra gRPC server options, [(key, value)];
        `grpc_max_threads` / `rest_api_num_threads`: request threads of each API;
        `enable_grpc_healthcheck_service`: the standard `grpc.health.v1.Health` service;
        `enable_serialization_as_tensor_content`: gRPC Predict outputs as `tensor_content`;
        `rest_api_enable_cors_support`: CORS headers on `/v1` answers and CORS preflights
        (`OPTIONS` with an http(s) `Origin`) answered, as tensorflow_model_server does;
        `strict_start`: like tensorflow_model_server, `start()` fails when a model has no
        version loaded because its loads failed (after their retries); the `serve` command
        turns it on. `manager_options`: keyword arguments of `serving.models.ModelManager`
        (load retries, method-name check, warmup, tags, version labels)."""
        from serving.metrics import Metrics

        if monitoring_path is not None and rest_api_port is None:
            raise ValueError(
                "Prometheus monitoring is served on the REST port: give a rest_api_port"
            )
        if port is None and rest_api_port is None and not grpc_socket_path:
            raise ValueError("give a gRPC port, a gRPC socket path or a REST port")
        self.batcher = None
        if batching is not None:
            from serving.batching import Batcher

            self.batcher = Batcher(batching)
        self.manager = ModelManager(
            config, batcher=self.batcher, freeze_gc=freeze_gc, **(manager_options or {})
        )
        # per-name state only for configured models: unknown names add nothing (issue 20)
        self.metrics = Metrics(model_filter=self.manager.states.__contains__)
        self.monitoring_path = monitoring_path
        # with batching, request threads mostly wait for their batch: give them room to queue up
        self._workers = 64 if batching is not None else None
        self.grpc_max_threads = grpc_max_threads or self._workers or 8
        self.rest_api_num_threads = rest_api_num_threads or self._workers or 4
        self.host, self.rest_api_port = host, rest_api_port
        self.port, self.grpc_host = port, grpc_host or host
        self.grpc_socket_path = grpc_socket_path or None
        self.grpc_channel_arguments = list(grpc_channel_arguments)
        self.enable_grpc_healthcheck_service = enable_grpc_healthcheck_service
        self.tensor_content = enable_serialization_as_tensor_content
        self.strict_start = strict_start
        self.cors = rest_api_enable_cors_support
        self._grpc = None
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.model_config_file = model_config_file
        self.config_poll_wait_seconds = model_config_file_poll_wait_seconds
        self.poll_wait_seconds = poll_wait_seconds
        self.timeout_s = rest_api_timeout_in_ms / 1000.0 if rest_api_timeout_in_ms > 0 else None
        self._loop = None
        self._runner = None
        self._site = None
        self._thread = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error = None

    def start(self, timeout=120):
        """Load the models, open the gRPC and REST ports; returns once requests can be served.

        `port=None` leaves gRPC TCP off, `rest_api_port=None` leaves REST off; 0 picks a free
        port. Raises a `ServingError` with TF Serving's message for a config it refuses (a
        platform other than `tensorflow`, a missing base path, a version label on a version
        that is not available) and, with `strict_start`, for a model whose loads failed."""
        from serving.grpc_api import make_grpc_server

        try:
            self.manager.check_config()
            self.manager.poll_until_settled(self._stopping)
            if self.strict_start:
                failure = self.manager.unavailable_models()
                if failure:
                    raise ServingError("UNKNOWN", failure)
            self.manager.check_version_labels()
        except ServingError:
            self.stop()
            raise
        if self.port is not None or self.grpc_socket_path:
            health = (
                (lambda: not self._stopping.is_set())
                if self.enable_grpc_healthcheck_service
                else None
            )
            try:
                self._grpc, self.port = make_grpc_server(
                    self.manager,
                    self.grpc_host,
                    self.port,
                    workers=self.grpc_max_threads,
                    metrics=self.metrics,
                    socket_path=self.grpc_socket_path,
                    channel_arguments=self.grpc_channel_arguments,
                    health_check=health,
                    tensor_content=self.tensor_content,
                )
            except (OSError, RuntimeError) as error:
                self.stop()
                raise RuntimeError(f"gRPC server failed to start: {error}") from error
        if self.rest_api_port is None:
            self._ready.set()
            self._start_polling()
            return self
        self._thread = threading.Thread(target=self._serve, name="serving-rest", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            self.stop()
            raise RuntimeError(f"REST server failed to start: {self._error}")
        self._start_polling()
        return self

    def _start_polling(self):
        if self.poll_wait_seconds and self.poll_wait_seconds > 0:
            threading.Thread(target=self._poll_loop, name="serving-poll", daemon=True).start()
        if (
            self.model_config_file
            and self.config_poll_wait_seconds
            and self.config_poll_wait_seconds > 0
        ):
            threading.Thread(
                target=self._config_poll_loop, name="serving-config-poll", daemon=True
            ).start()

    def _config_poll_loop(self):
        """Re-read `model_config_file`; a changed, valid config replaces the model set, a bad one
        is logged and the current models keep serving."""
        current = self.manager.config.SerializeToString(deterministic=True)
        while not self._stopping.wait(self.config_poll_wait_seconds):
            try:
                config = read_model_config(self.model_config_file)
                serialized = config.SerializeToString(deterministic=True)
                if serialized != current:
                    self.manager.reload(config)
                    current = serialized
                    log.info("reloaded the model config from %s", self.model_config_file)
            except Exception as error:  # keep serving what is loaded
                log.error(
                    "reading %s failed, keeping the current models: %s",
                    self.model_config_file,
                    error,
                )

    def _poll_loop(self):
        while not self._stopping.wait(self.poll_wait_seconds):
            try:
                self.manager.poll()
            except Exception:  # keep serving what is loaded
                log.exception("polling the model base paths failed")

    def _serve(self):
        from aiohttp import web

        from serving.rest import make_app

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        stopping = self._stopping

        @web.middleware
        async def refuse_when_stopping(request, handler):
            # a request on a kept-alive connection after stop(): the listening socket is
            # closed already
            if stopping.is_set():
                return web.json_response(
                    {"error": "Server is shutting down"},
                    status=503,
                    headers={"Connection": "close"},
                )
            return await handler(request)

        @web.middleware
        async def cors(request, handler):
            if not V1_PATH.fullmatch(request.rel_url.raw_path):
                return await handler(request)
            if request.method == "OPTIONS":  # a preflight: empty answers, like the real server's
                origin_ok = re.search(r"https?://", request.headers.get("Origin", ""))
                response = web.Response(status=200 if origin_ok else 400)
            else:
                response = await handler(request)
            response.headers.update(CORS_HEADERS)
            return response

        try:
            app = make_app(
                self.manager,
                self.timeout_s or 1e9,
                workers=self.rest_api_num_threads,
                metrics=self.metrics,
                metrics_path=self.monitoring_path,
            )
            app.middlewares.append(refuse_when_stopping)
            if self.cors:
                app.middlewares.append(cors)
            self._runner = web.AppRunner(
                app, access_log=None, shutdown_timeout=self.shutdown_grace_seconds
            )
            self._loop.run_until_complete(self._runner.setup())
            self._site = web.TCPSite(
                self._runner, self.host, self.rest_api_port, reuse_address=True
            )
            self._loop.run_until_complete(self._site.start())
            self.rest_api_port = self._site._server.sockets[0].getsockname()[1]
        except Exception as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def _close_rest_listener(self):
        server = getattr(self._site, "_server", None)
        if server is not None:
            server.close()  # no new connections; open ones drain (see refuse_when_stopping)

    def stop(self):
        """Stop serving: both ports stop accepting at once, in-flight requests get up to
        `shutdown_grace_seconds` to finish, then the models are unloaded."""
        self._stopping.set()
        grace = self.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        drained = self._grpc.stop(grace) if self._grpc is not None else None
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._close_rest_listener)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=max(deadline - time.monotonic(), 0.0) + 1.0)
        if drained is not None:
            drained.wait(timeout=max(deadline - time.monotonic(), 0.0) + 1.0)
            self._grpc = None
        if self.batcher is not None:
            self.batcher.stop()
        self.manager.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _flag_bool(text):
    """A boolean flag value as tensorflow_model_server reads it (`--enable_batching=true`)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t", "y"):
        return True
    if value in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _bool_flag(parser, name, default, help_text):
    parser.add_argument(
        f"--{name}",
        nargs="?",
        const=True,
        default=default,
        type=_flag_bool,
        metavar="true|false",
        help=help_text,
    )


# tensorflow_model_server's flags (model_servers/main.cc, tensorflow/serving 9d981c5) that have
# no meaning here: accepted, so that a command line written for the real binary runs unchanged,
# and named at start-up when given. {flag: (type, what it does in tensorflow_model_server)}
NO_EFFECT_FLAGS = {
    "enable_per_model_batching_parameters": (bool, "batching parameters read from each SavedModel"),
    "num_load_threads": (int, "a thread pool for loads (loads run one at a time here)"),
    "num_unload_threads": (int, "a thread pool for unloads"),
    "flush_filesystem_caches": (bool, "flushing file-system caches after loads"),
    "tensorflow_session_config_file": (str, "a session ConfigProto"),
    "platform_config_file": (str, "a PlatformConfigMap (only the tensorflow platform exists here)"),
    "per_process_gpu_memory_fraction": (float, "the GPU memory fraction of the session"),
    "num_request_iterations_for_warmup": (int, "replaying each warmup record several times"),
    "remove_unused_fields_from_bundle_metagraph": (bool, "trimming the loaded MetaGraphDef"),
    "num_tflite_pools": (int, "TF Lite interpreter pools"),
    "num_tflite_interpreters_per_pool": (int, "TF Lite interpreters per pool"),
    "xla_cpu_compilation_enabled": (bool, "XLA:CPU JIT"),
    "xla_gpu_compilation_enabled": (bool, "XLA:GPU JIT"),
    "enable_profiler": (bool, "the TensorFlow profiler gRPC service"),
    "thread_pool_factory_config_file": (str, "custom inter/intra-op thread pools"),
    "mixed_precision": (str, "a mixed-precision mode of the session"),
    "skip_initialize_tpu": (bool, "TPU initialisation"),
}


def add_flags(parser):
    """tensorflow_model_server's whole flag list (main.cc): the ones with meaning here are
    honoured, the others (`NO_EFFECT_FLAGS`) accepted and reported at start-up."""
    parser.add_argument(
        "--version",
        nargs="?",
        const=True,
        default=False,
        type=_flag_bool,
        metavar="true|false",
        help="print the server and TensorFlow versions and exit",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8500,
        help="gRPC port (default 8500; 0 picks a free port here, where the real server "
        "disables TCP gRPC)",
    )
    parser.add_argument(
        "--grpc_socket_path",
        default="",
        help="also serve gRPC on this Unix socket (relative or absolute path)",
    )
    parser.add_argument(
        "--grpc_host",
        default="0.0.0.0",
        help="gRPC bind address (default 0.0.0.0; not a tensorflow_model_server flag)",
    )
    parser.add_argument(
        "--grpc_channel_arguments",
        default="",
        help="comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=2000",
    )
    parser.add_argument(
        "--grpc_max_threads",
        type=int,
        default=0,
        help="gRPC request threads (default: 8, 64 with batching)",
    )
    _bool_flag(
        parser,
        "enable_grpc_healthcheck_service",
        False,
        "serve the standard grpc.health.v1.Health service",
    )
    _bool_flag(
        parser,
        "enable_serialization_as_tensor_content",
        False,
        "write gRPC Predict outputs as tensor_content bytes",
    )
    parser.add_argument(
        "--rest_api_port",
        type=int,
        default=8501,
        help="REST port (default 8501; 0 picks a free port)",
    )
    parser.add_argument(
        "--rest_api_host",
        default="0.0.0.0",
        help="REST bind address (default 0.0.0.0; not a tensorflow_model_server flag)",
    )
    parser.add_argument(
        "--rest_api_num_threads",
        type=int,
        default=0,
        help="REST request threads (default: 4, 64 with batching)",
    )
    _bool_flag(
        parser,
        "rest_api_enable_cors_support",
        False,
        "CORS headers on REST answers, preflights answered",
    )
    parser.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="REST request timeout in ms (default 30000; <=0 disables it)",
    )
    parser.add_argument(
        "--model_name", default="default", help="name of the model (default: default)"
    )
    parser.add_argument(
        "--model_base_path", default="", help="folder of the model's integer version folders"
    )
    parser.add_argument(
        "--model_config_file",
        default="",
        help="text-format ModelServerConfig (overrides --model_name/--model_base_path)",
    )
    parser.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0,
        help="seconds between re-reads of --model_config_file (default 0: read once)",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1,
        help="seconds between scans of the base paths for new versions (default 1; 0: load once)",
    )
    parser.add_argument(
        "--max_num_load_retries",
        type=int,
        default=5,
        help="retries of a failed version load (default 5; 0: one attempt)",
    )
    parser.add_argument(
        "--load_retry_interval_micros",
        type=int,
        default=60 * 1000 * 1000,
        help="microseconds between load retries (default 60 s; negative: no wait)",
    )
    _bool_flag(
        parser,
        "allow_version_labels_for_unavailable_models",
        False,
        "allow version labels on versions that are not loaded (yet)",
    )
    parser.add_argument(
        "--saved_model_tags",
        default="serve",
        help="comma-separated tag set of the MetaGraph to load (default: serve)",
    )
    _bool_flag(
        parser,
        "prefer_tflite_model",
        False,
        "serve a version folder's model.tflite (LiteRT interpreter) instead of its SavedModel",
    )
    _bool_flag(
        parser,
        "enable_model_warmup",
        True,
        "replay assets.extra/tf_serving_warmup_requests at load",
    )
    _bool_flag(
        parser,
        "enable_signature_method_name_check",
        False,
        "Classify/Regress/MultiInference require the signature's method_name (default false, "
        "as in tensorflow_model_server: TF2 and Keras SavedModels have none)",
    )
    parser.add_argument(
        "--tensorflow_session_parallelism",
        type=int,
        default=0,
        help="threads of TensorFlow's inter- and intra-op pools (default: auto)",
    )
    parser.add_argument(
        "--tensorflow_intra_op_parallelism",
        type=int,
        default=0,
        help="threads of TensorFlow's intra-op pool (default: auto)",
    )
    parser.add_argument(
        "--tensorflow_inter_op_parallelism",
        type=int,
        default=0,
        help="threads of TensorFlow's inter-op pool (default: auto)",
    )
    parser.add_argument(
        "--shutdown_grace_seconds",
        type=float,
        default=10,
        help="on SIGTERM/SIGINT, seconds in-flight requests get to finish (default 10; "
        "not a tensorflow_model_server flag)",
    )
    _bool_flag(
        parser,
        "enable_batching",
        False,
        "batch concurrent requests per model and signature (see --batching_parameters_file)",
    )
    parser.add_argument(
        "--batching_parameters_file",
        default="",
        help="text-format BatchingParameters for --enable_batching "
        "(default: TF Serving's defaults)",
    )
    parser.add_argument(
        "--monitoring_config_file",
        default="",
        help="text-format MonitoringConfig; prometheus_config { enable: true path: ... } serves "
        "Prometheus metrics on the REST port",
    )
    _bool_flag(parser, "use_alts_credentials", False, "refused if true: ALTS is not available here")
    parser.add_argument(
        "--ssl_config_file",
        default="",
        help="refused if given: TLS is not available here (put a TLS proxy in front)",
    )
    for name, (kind, meaning) in NO_EFFECT_FLAGS.items():
        help_text = f"accepted, no effect here ({meaning})"
        if kind is bool:
            _bool_flag(parser, name, None, help_text)
        else:
            parser.add_argument(f"--{name}", type=kind, default=None, help=help_text)
    return parser


def flags_without_effect(args):
    """The `NO_EFFECT_FLAGS` given on the command line."""
    return [f"--{name}" for name in NO_EFFECT_FLAGS if getattr(args, name, None) is not None]


def config_from_args(args):
    if args.model_config_file:
        try:
            return read_model_config(args.model_config_file)
        except (OSError, ValueError) as error:
            raise SystemExit(f"serve: --model_config_file: {error}") from None
    if not args.model_base_path:
        raise SystemExit("serve: give --model_base_path (with --model_name) or --model_config_file")
    return single_model_config(args.model_name, os.path.abspath(args.model_base_path))


def server_from_args(args, **overrides):
    """A `Server` configured by the `serve` flags, as the `serve` command runs it (strict
    start-up, TF Serving's load retries); `overrides`: Server keyword arguments to replace."""
    from serving.grpc_api import parse_channel_arguments

    if getattr(args, "use_alts_credentials", False):
        raise SystemExit(
            "serve: --use_alts_credentials: ALTS credentials are not available in this server"
        )
    if getattr(args, "ssl_config_file", ""):
        raise SystemExit(
            "serve: --ssl_config_file: TLS is not available in this server; "
            "serve on loopback and put a TLS-terminating proxy in front"
        )
    try:
        channel_arguments = parse_channel_arguments(args.grpc_channel_arguments)
    except ValueError as error:
        raise SystemExit(f"serve: {error}") from None
    tags = [t for t in args.saved_model_tags.split(",") if t] or ["serve"]
    manager_options = dict(
        max_num_load_retries=max(args.max_num_load_retries, 0),
        load_retry_interval_s=max(args.load_retry_interval_micros, 0) / 1e6,
        check_method_name=args.enable_signature_method_name_check,
        enable_model_warmup=args.enable_model_warmup,
        saved_model_tags=tags,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        prefer_tflite_model=args.prefer_tflite_model,
    )
    options = dict(
        rest_api_port=args.rest_api_port,
        host=args.rest_api_host,
        poll_wait_seconds=args.file_system_poll_wait_seconds,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        port=args.port,
        grpc_host=args.grpc_host,
        model_config_file=args.model_config_file or None,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        batching=batching_from_args(args),
        monitoring_path=monitoring_from_args(args),
        freeze_gc=True,
        grpc_socket_path=args.grpc_socket_path or None,
        grpc_channel_arguments=channel_arguments,
        grpc_max_threads=args.grpc_max_threads or None,
        rest_api_num_threads=args.rest_api_num_threads or None,
        enable_grpc_healthcheck_service=args.enable_grpc_healthcheck_service,
        enable_serialization_as_tensor_content=args.enable_serialization_as_tensor_content,
        rest_api_enable_cors_support=args.rest_api_enable_cors_support,
        strict_start=True,
        manager_options=manager_options,
    )
    options.update(overrides)
    return Server(config_from_args(args), **options)


def _set_tensorflow_threads(args):
    """--tensorflow_session_parallelism / _intra_op_ / _inter_op_ (process-wide here)."""
    session, intra, inter = (
        args.tensorflow_session_parallelism,
        args.tensorflow_intra_op_parallelism,
        args.tensorflow_inter_op_parallelism,
    )
    if session > 0 and intra > 0 and inter > 0:
        raise SystemExit(
            "serve: Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
        )
    if intra > 0 or inter > 0:
        session = 0
    intra, inter = intra or session, inter or session
    if intra > 0 or inter > 0:
        import tensorflow as tf

        if intra > 0:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter > 0:
            tf.config.threading.set_inter_op_parallelism_threads(inter)


def batching_from_args(args):
    """BatchingOptions for `--enable_batching`, or None."""
    from serving.batching import BatchingOptions, read_batching_options

    if not getattr(args, "enable_batching", False):
        if getattr(args, "batching_parameters_file", ""):
            raise SystemExit(
                "serve: server_options.batching_parameters_file is set without setting "
                "server_options.enable_batching to true."
            )
        return None
    if not args.batching_parameters_file:
        return BatchingOptions()
    try:
        return read_batching_options(args.batching_parameters_file)
    except (OSError, ValueError) as error:
        raise SystemExit(f"serve: --batching_parameters_file: {error}") from None


def monitoring_from_args(args):
    """The Prometheus metrics path of `--monitoring_config_file`, or None."""
    from serving.metrics import read_monitoring_path

    if not getattr(args, "monitoring_config_file", ""):
        return None
    try:
        path = read_monitoring_path(args.monitoring_config_file)
    except (OSError, ValueError) as error:
        raise SystemExit(f"serve: --monitoring_config_file: {error}") from None
    return path


def _version_text():
    import importlib.metadata

    try:
        ours = importlib.metadata.version("keras-attention-zoo")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown"
    import tensorflow as tf

    return (
        f"TensorFlow ModelServer: keras-attention-zoo {ours}\nTensorFlow Library: {tf.__version__}"
    )


def main(args):
    """Run until SIGTERM/SIGINT (the `serve` subcommand); then both APIs stop accepting at once,
    in-flight requests get `--shutdown_grace_seconds`, and the process exits within that
    grace period plus half a second whatever is still computing."""
    if args.version:
        print(_version_text(), flush=True)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ignored = flags_without_effect(args)
    if ignored:
        print(f"Accepted but without effect in this server: {', '.join(ignored)}", flush=True)
    _set_tensorflow_threads(args)
    server = server_from_args(args)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server.start()
    except (
        ServingError,
        RuntimeError,
    ) as error:  # RuntimeError: a port or socket that cannot be bound
        print(f"Failed to start server. Error: {error}", file=sys.stderr, flush=True)
        return 255
    if server.port is not None:
        print(f"Running gRPC ModelServer at {args.grpc_host}:{server.port} ...", flush=True)
    if server.grpc_socket_path:
        print(f"Running gRPC ModelServer at UNIX socket {server.grpc_socket_path} ...", flush=True)
    if server.rest_api_port is not None:
        print(
            f"Exporting HTTP/REST API at:{args.rest_api_host}:{server.rest_api_port} ...",
            flush=True,
        )
    stop.wait()
    print("Shutting down: draining in-flight requests ...", flush=True)
    stopper = threading.Thread(target=server.stop, name="serving-stop", daemon=True)
    stopper.start()
    stopper.join(server.shutdown_grace_seconds + 0.5)
    print(
        "Server stopped."
        if not stopper.is_alive()
        else "Server stopped (requests still computing after the grace period were abandoned).",
        flush=True,
    )
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)  # request threads still computing must not hold the exit


if __name__ == "__main__":
    main(add_flags(argparse.ArgumentParser(prog="serving.server")).parse_args())
