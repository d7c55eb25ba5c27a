"""`sift-bench dashboard --serve`: the report on 127.0.0.1, rebuilt when a results file changes.

Change detection is mtime polling of the files `sift_bench.results` writes (atomically, so a rebuild never
reads half a table); the served page polls `/version` and reloads itself. That poll script is only added
to the served copy, so the file on disk stays offline-clean.
"""

from __future__ import annotations

import html
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sift_bench.dashboard import CSS, write_dashboard
from sift_bench.errors import SiftBenchError
from sift_bench.results import EVALS_FILE, MANIFEST_FILE, TRIALS_FILE

WATCHED = (TRIALS_FILE, EVALS_FILE, MANIFEST_FILE)

LIVE_JS = """<script>
(function () {  // sift-bench dashboard --serve: reload when the results change
  var seen = null;
  setInterval(function () {
    fetch("/version", {cache: "no-store"}).then(function (r) { return r.text(); }).then(function (v) {
      if (seen === null) { seen = v; } else if (v !== seen) { location.reload(); }
    }).catch(function () {});
  }, 2000);
})();
</script>"""


def _error_page(message: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>SIFT-Bench dashboard</title>'
        f"<style>{CSS}</style></head><body><h1>SIFT-Bench dashboard</h1>"
        f'<p class="banner bad">{html.escape(message)}</p><p>This page reloads when the results change.</p>'
        "</body></html>"
    )


class DashboardServer:
    """Serve the report on host:port and rebuild it when a watched results file changes.

    `start()` returns at once (server and watcher run in daemon threads); `stop()` shuts both down.
    Port 0 picks a free port; read it from `.port` / `.url` after `start()`.
    """

    def __init__(
        self,
        results: list[str | Path],
        out: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        poll_seconds: float = 1.0,
        **build_kwargs: Any,
    ) -> None:
        self.results = [Path(r) for r in results]
        self.out = Path(out)
        self.poll_seconds = poll_seconds
        self.build_kwargs = build_kwargs
        self.version = 0
        self._html = b""
        self._stamp: tuple = ()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/version":
                    body, ctype = str(server.version).encode(), "text/plain"
                elif path in ("/", f"/{server.out.name}"):
                    with server._lock:
                        body, ctype = server._html, "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # keep the terminal for our own lines
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.httpd.server_address[0]}:{self.port}/"

    def _mtimes(self) -> tuple:
        return tuple(
            (p / name).stat().st_mtime_ns if (p / name).exists() else None for p in self.results for name in WATCHED
        )

    def rebuild(self) -> None:
        """Write the report file and swap the served copy (with the live-reload script) in."""
        self._stamp = self._mtimes()
        try:
            write_dashboard(self.results, self.out, **self.build_kwargs)
            text = self.out.read_text(encoding="utf-8").replace("</body>", LIVE_JS + "</body>", 1)
        except SiftBenchError as e:  # e.g. the suite has not written its first table yet
            text = _error_page(str(e)).replace("</body>", LIVE_JS + "</body>", 1)
        with self._lock:
            self._html = text.encode("utf-8")
            self.version += 1

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            if self._mtimes() != self._stamp:
                self.rebuild()

    def start(self) -> DashboardServer:
        self.rebuild()
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True),
            threading.Thread(target=self._watch, name="dashboard-watch", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def serve_forever(self) -> None:
        """Block until Ctrl-C, then stop cleanly."""
        self.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
