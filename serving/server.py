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
import signal
import threading

from serving.models import ModelManager, read_model_config, single_model_config

log = logging.getLogger("serving")


class Server:
    def __init__(self, config, rest_api_port=8501, host="0.0.0.0", poll_wait_seconds=1.0,
                 rest_api_timeout_in_ms=30000, port=8500, grpc_host=None, model_config_file=None,
                 model_config_file_poll_wait_seconds=0, shutdown_grace_seconds=10.0, batching=None,
                 monitoring_path=None, freeze_gc=False):
        """`batching`: a `serving.batching.BatchingOptions` (dynamic batching) or None;
        `monitoring_path`: serve Prometheus metrics on the REST port at this path, or None;
        `freeze_gc`: take the loaded models out of the garbage collector's view after each
        load (`serving.models.ModelManager`); the `serve` command turns it on, a process that
        does more than serve may leave it off."""
        from serving.metrics import Metrics

        if monitoring_path is not None and rest_api_port is None:
            raise ValueError("Prometheus monitoring is served on the REST port: give a rest_api_port")
        self.batcher = None
        if batching is not None:
            from serving.batching import Batcher

            self.batcher = Batcher(batching)
        self.manager = ModelManager(config, batcher=self.batcher, freeze_gc=freeze_gc)
        self.metrics = Metrics()
        self.monitoring_path = monitoring_path
        # with batching, request threads mostly wait for their batch: give them room to queue up
        self._workers = 64 if batching is not None else None
        self.host, self.rest_api_port = host, rest_api_port
        self.port, self.grpc_host = port, grpc_host or host
        self._grpc = None
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.model_config_file = model_config_file
        self.config_poll_wait_seconds = model_config_file_poll_wait_seconds
        self.poll_wait_seconds = poll_wait_seconds
        self.timeout_s = rest_api_timeout_in_ms / 1000.0 if rest_api_timeout_in_ms > 0 else None
        self._loop = None
        self._runner = None
        self._thread = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error = None

    def start(self, timeout=120):
        """Load the models, open the gRPC and REST ports; returns once requests can be served.

        `port=None` leaves gRPC off, `rest_api_port=None` leaves REST off; 0 picks a free port."""
        from serving.grpc_api import make_grpc_server

        self.manager.poll()
        if self.port is not None:
            try:
                self._grpc, self.port = make_grpc_server(self.manager, self.grpc_host, self.port,
                                                         workers=self._workers or 8, metrics=self.metrics)
            except (OSError, RuntimeError) as error:
                self.stop()
                raise RuntimeError(f"gRPC server failed to start on port {self.port}: {error}")
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
        if self.model_config_file and self.config_poll_wait_seconds and self.config_poll_wait_seconds > 0:
            threading.Thread(target=self._config_poll_loop, name="serving-config-poll", daemon=True).start()

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
                log.error("reading %s failed, keeping the current models: %s", self.model_config_file, error)

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
        try:
            app = make_app(self.manager, self.timeout_s or 1e9, workers=self._workers or 4, metrics=self.metrics,
                           metrics_path=self.monitoring_path)
            self._runner = web.AppRunner(app, access_log=None,
                                         shutdown_timeout=self.shutdown_grace_seconds)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.rest_api_port, reuse_address=True)
            self._loop.run_until_complete(site.start())
            self.rest_api_port = site._server.sockets[0].getsockname()[1]
        except Exception as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self):
        """Stop serving: both ports stop accepting, in-flight requests get up to
        `shutdown_grace_seconds` to finish, then the models are unloaded."""
        self._stopping.set()
        grace = self.shutdown_grace_seconds
        drained = self._grpc.stop(grace) if self._grpc is not None else None
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=grace + 10)
        if drained is not None:
            drained.wait(timeout=grace + 10)
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


def add_flags(parser):
    """The `tensorflow_model_server` flags this server implements."""
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0 picks a free port)")
    parser.add_argument("--grpc_host", default="0.0.0.0", help="gRPC bind address (default 0.0.0.0)")
    parser.add_argument("--rest_api_port", type=int, default=8501,
                        help="REST port (default 8501; 0 picks a free port)")
    parser.add_argument("--rest_api_host", default="0.0.0.0", help="REST bind address (default 0.0.0.0)")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                        help="REST request timeout in ms (default 30000; <=0 disables it)")
    parser.add_argument("--model_name", default="default", help="name of the model (default: default)")
    parser.add_argument("--model_base_path", default="", help="folder of the model's integer version folders")
    parser.add_argument("--model_config_file", default="",
                        help="text-format ModelServerConfig (overrides --model_name/--model_base_path)")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                        help="seconds between re-reads of --model_config_file (default 0: read once)")
    parser.add_argument("--shutdown_grace_seconds", type=float, default=10,
                        help="on SIGTERM/SIGINT, seconds in-flight requests get to finish (default 10; "
                             "not a tensorflow_model_server flag)")
    parser.add_argument("--enable_batching", nargs="?", const=True, default=False, type=_flag_bool,
                        metavar="true|false", help="batch concurrent requests per model and signature (see --batching_parameters_file)")
    parser.add_argument("--batching_parameters_file", default="",
                        help="text-format BatchingParameters for --enable_batching (default: TF Serving's defaults)")
    parser.add_argument("--monitoring_config_file", default="",
                        help="text-format MonitoringConfig; prometheus_config { enable: true path: ... } serves "
                             "Prometheus metrics on the REST port")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1,
                        help="seconds between scans of the base paths for new versions (default 1; 0: load once)")
    return parser


def config_from_args(args):
    if args.model_config_file:
        try:
            return read_model_config(args.model_config_file)
        except (OSError, ValueError) as error:
            raise SystemExit(f"serve: --model_config_file: {error}")
    if not args.model_base_path:
        raise SystemExit("serve: give --model_base_path (with --model_name) or --model_config_file")
    return single_model_config(args.model_name, os.path.abspath(args.model_base_path))


def batching_from_args(args):
    """BatchingOptions for `--enable_batching`, or None."""
    from serving.batching import BatchingOptions, read_batching_options

    if not getattr(args, "enable_batching", False):
        if getattr(args, "batching_parameters_file", ""):
            log.warning("--batching_parameters_file is only read with --enable_batching (as in tensorflow_model_server)")
        return None
    if not args.batching_parameters_file:
        return BatchingOptions()
    try:
        return read_batching_options(args.batching_parameters_file)
    except (OSError, ValueError) as error:
        raise SystemExit(f"serve: --batching_parameters_file: {error}")


def monitoring_from_args(args):
    """The Prometheus metrics path of `--monitoring_config_file`, or None."""
    from serving.metrics import read_monitoring_path

    if not getattr(args, "monitoring_config_file", ""):
        return None
    try:
        path = read_monitoring_path(args.monitoring_config_file)
    except (OSError, ValueError) as error:
        raise SystemExit(f"serve: --monitoring_config_file: {error}")
    return path


def main(args):
    """Run until interrupted (the `serve` subcommand)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = Server(config_from_args(args), rest_api_port=args.rest_api_port, host=args.rest_api_host,
                    poll_wait_seconds=args.file_system_poll_wait_seconds,
                    rest_api_timeout_in_ms=args.rest_api_timeout_in_ms, port=args.port,
                    grpc_host=args.grpc_host, model_config_file=args.model_config_file or None,
                    model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
                    shutdown_grace_seconds=args.shutdown_grace_seconds, batching=batching_from_args(args),
                    monitoring_path=monitoring_from_args(args), freeze_gc=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"Running gRPC ModelServer at {args.grpc_host}:{server.port} ...", flush=True)
    print(f"Exporting HTTP/REST API at:{args.rest_api_host}:{server.rest_api_port} ...", flush=True)
    try:
        stop.wait()
        print("Shutting down: draining in-flight requests ...", flush=True)
    finally:
        server.stop()
    print("Server stopped.", flush=True)
    return 0


if __name__ == "__main__":
    main(add_flags(argparse.ArgumentParser(prog="serving.server")).parse_args())
