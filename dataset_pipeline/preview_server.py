"""The preview server `dataset-pipeline dev` runs beside the UI: Python's own HTTP server, serving the PNGs in
the storage's `previews` folders and nothing else, so the charts in asset metadata show inline."""

from __future__ import annotations

import os
import threading
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

from dataset_pipeline.resources.storage import PREVIEWS_FOLDER


class PreviewRequestHandler(SimpleHTTPRequestHandler):
    """GET and HEAD of `…/previews/….png` under the storage root; 404 for anything else, no listings."""

    def send_head(self):  # type: ignore[no-untyped-def]
        requested = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
        target = Path(self.translate_path(self.path))
        root = Path(self.directory).resolve()
        if (
            requested.suffix != ".png"
            or PREVIEWS_FOLDER not in requested.parts
            or ".." in requested.parts
            or not target.resolve().is_relative_to(root)
            or not target.is_file()
        ):
            self.send_error(404, "not a preview")
            return None
        return super().send_head()

    def list_directory(self, path):  # type: ignore[no-untyped-def]
        self.send_error(404, "not a preview")
        return None

    def end_headers(self) -> None:
        # A preview file is never rewritten (its folder is its run's), so the browser may keep it.
        self.send_header("Cache-Control", "public, max-age=86400, immutable")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the console is for runs, not for every picture the UI loads."""


def serve_previews(storage_root: Path, host: str, port: int) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; `shutdown()` on the returned server stops it."""
    storage_root.mkdir(parents=True, exist_ok=True)
    handler = partial(PreviewRequestHandler, directory=os.fspath(storage_root))
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="preview-server", daemon=True).start()
    return server
