"""A TF-Serving-compatible model server: `tensorflow_model_server`'s flags, REST API on aiohttp.

`Server(config).start()` loads the models (the ports open once the initial versions are
loaded, like the real server), serves REST in a background thread and polls the base paths
for new versions every `file_system_poll_wait_seconds`; `stop()` shuts everything down.
"""

import argparse
import asyncio
import logging
import os
import threading

from serving.models import ModelManager, read_model_config, single_model_config

log = logging.getLogger("serving")


class Server:
    def __init__(self, config, rest_api_port=8501, host="0.0.0.0", poll_wait_seconds=1.0,
                 rest_api_timeout_in_ms=30000):
        self.manager = ModelManager(config)
        self.host, self.rest_api_port = host, rest_api_port
        self.poll_wait_seconds = poll_wait_seconds
        self.timeout_s = rest_api_timeout_in_ms / 1000.0 if rest_api_timeout_in_ms > 0 else None
        self._loop = None
        self._runner = None
        self._thread = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error = None

    def start(self, timeout=120):
        """Load the models, open the REST port; returns once requests can be served."""
        self.manager.poll()
        self._thread = threading.Thread(target=self._serve, name="serving-rest", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            self.stop()
            raise RuntimeError(f"REST server failed to start: {self._error}")
        if self.poll_wait_seconds and self.poll_wait_seconds > 0:
            threading.Thread(target=self._poll_loop, name="serving-poll", daemon=True).start()
        return self

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
            self._runner = web.AppRunner(make_app(self.manager, self.timeout_s or 1e9), access_log=None)
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
        self._stopping.set()
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.manager.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def add_flags(parser):
    """The `tensorflow_model_server` flags this server implements."""
    parser.add_argument("--rest_api_port", type=int, default=8501,
                        help="REST port (default 8501; 0 picks a free port)")
    parser.add_argument("--rest_api_host", default="0.0.0.0", help="REST bind address (default 0.0.0.0)")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                        help="REST request timeout in ms (default 30000; <=0 disables it)")
    parser.add_argument("--model_name", default="default", help="name of the model (default: default)")
    parser.add_argument("--model_base_path", default="", help="folder of the model's integer version folders")
    parser.add_argument("--model_config_file", default="",
                        help="text-format ModelServerConfig (overrides --model_name/--model_base_path)")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1,
                        help="seconds between scans of the base paths for new versions (default 1; 0: load once)")
    return parser


def config_from_args(args):
    if args.model_config_file:
        return read_model_config(args.model_config_file)
    if not args.model_base_path:
        raise SystemExit("serve: give --model_base_path (with --model_name) or --model_config_file")
    return single_model_config(args.model_name, os.path.abspath(args.model_base_path))


def main(args):
    """Run until interrupted (the `serve` subcommand)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = Server(config_from_args(args), rest_api_port=args.rest_api_port, host=args.rest_api_host,
                    poll_wait_seconds=args.file_system_poll_wait_seconds,
                    rest_api_timeout_in_ms=args.rest_api_timeout_in_ms)
    server.start()
    print(f"Exporting HTTP/REST API at:{args.rest_api_host}:{server.rest_api_port} ...", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    main(add_flags(argparse.ArgumentParser(prog="serving.server")).parse_args())
