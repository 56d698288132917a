"""A Hugging Face Hub stand-in on loopback HTTP: the one route `hf_hub_download` uses,
`HEAD` / `GET /<owner>/<repo>/resolve/<revision>/<file>`, with the headers it reads
(`X-Repo-Commit`, `ETag`, `Content-Length`; `X-Error-Code` on a 404)."""

import hashlib
import http.server
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Serves `files` ({(repo id, file name): bytes}) at revisions `main` and `COMMIT`;
    `requests` records (method, path) of every request. Use as a context manager."""

    def __init__(self, files):
        self.files = dict(files)
        self.requests = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):  # noqa: N802
                self._answer(body=False)

            def do_GET(self):  # noqa: N802
                self._answer(body=True)

            def _answer(self, body):
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?", 1)[0].strip("/").split("/", 4)
                data = None
                if len(parts) == 5 and parts[2] == "resolve" and parts[3] in ("main", COMMIT):
                    data = hub.files.get(("/".join(parts[:2]), parts[4]))
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Error-Message", "Entry not found")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def downloads(self):
        """GETs of files (huggingface_hub also asks other /api routes, answered 404)."""
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]

    def file_requests(self):
        return [(method, path) for method, path in self.requests if "/resolve/" in path]

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def use_fake_hub(monkeypatch, hub, cache_dir, offline=False):
    """Point `huggingface_hub` at `hub` with an empty cache in `cache_dir`."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    # what HF_ENDPOINT set before `import huggingface_hub` gives
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        huggingface_hub.constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
