"""Pictures in the UI without a click: PNGs stored under the version's previews, short markdown pointing at
the preview server, and that server serving previews and nothing else."""

from __future__ import annotations

import contextlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from dataset_pipeline.assets.pictures import (
    INLINE_MARKDOWN_LIMIT,
    PREVIEW_URL_VARIABLE,
    PREVIEW_WIDTH_PX,
    picture_metadata,
)
from dataset_pipeline.preview_server import serve_previews
from dataset_pipeline.resources.storage import LocalDatasetStorage
from dataset_pipeline_tests.dev_server import free_port


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png(2, 1)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.fixture
def storage(tmp_path: Path) -> LocalDatasetStorage:
    return LocalDatasetStorage(root=str(tmp_path / "storage"))


@pytest.fixture
def preview_url(storage: LocalDatasetStorage):
    server = serve_previews(storage.root_path, "127.0.0.1", free_port())
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_pictures_are_files_under_the_version_and_short_markdown_points_at_them(
    storage, preview_url, monkeypatch
):
    monkeypatch.setenv(PREVIEW_URL_VARIABLE, preview_url)
    version_dir = storage.version_dir("ann", "cars", "fleet", 2)
    metadata = picture_metadata(storage, version_dir, "class_distribution", "run-1", {"class_chart": PNG})

    stored = version_dir / "previews" / "class_distribution" / "run-1" / "class_chart.png"
    assert stored.read_bytes() == PNG
    assert metadata["class_chart_png"] == dg.MetadataValue.path(str(stored))
    markdown = metadata["class_chart"].value
    assert len(markdown) < INLINE_MARKDOWN_LIMIT and "base64" not in markdown
    url = markdown.removeprefix("![class_chart](").removesuffix(")")
    assert url == f"{preview_url}/ann/cars/fleet/v2/previews/class_distribution/run-1/class_chart.preview.png"
    assert get(url) == (200, PNG)  # not wider than a preview: shown as it is


def test_a_wide_picture_is_shown_scaled_to_the_column_and_kept_full_size(storage, preview_url, monkeypatch):
    from PIL import Image

    monkeypatch.setenv(PREVIEW_URL_VARIABLE, preview_url)
    wide = _png(1016, 500)
    version_dir = storage.version_dir("ann", "cars", "fleet", 3)
    metadata = picture_metadata(storage, version_dir, "augmented_dataset", "run-3", {"samples": wide})
    assert Path(metadata["samples_png"].value).read_bytes() == wide
    status, shown = get(metadata["samples"].value.split("](", 1)[1].rstrip(")"))
    assert status == 200
    with Image.open(io.BytesIO(shown)) as image:
        assert image.size == (PREVIEW_WIDTH_PX, round(500 * PREVIEW_WIDTH_PX / 1016))


def test_without_a_preview_server_only_the_path_is_given(storage, monkeypatch):
    monkeypatch.delenv(PREVIEW_URL_VARIABLE, raising=False)
    version_dir = storage.version_dir("ann", "cars", "fleet", 1)
    metadata = picture_metadata(storage, version_dir, "augmented_dataset", "run-2", {"samples": PNG})
    assert set(metadata) == {"samples_png"}
    assert Path(metadata["samples_png"].value).read_bytes() == PNG


def test_the_preview_server_serves_preview_pngs_and_nothing_else(storage, preview_url):
    root = storage.root_path
    preview = root / "ann" / "cars" / "fleet" / "v1" / "previews" / "a" / "r" / "chart.png"
    preview.parent.mkdir(parents=True)
    preview.write_bytes(PNG)
    (root / "ann" / "cars" / "fleet" / "v1" / "files").mkdir(parents=True)
    (root / "ann" / "cars" / "fleet" / "v1" / "files" / "photo.png").write_bytes(PNG)
    (preview.parent / "notes.txt").write_text("not a picture")
    outside = root.parent / "secret.png"
    outside.write_bytes(PNG)
    with contextlib.suppress(FileExistsError):
        (preview.parent / "link.png").symlink_to(outside)

    assert get(f"{preview_url}/ann/cars/fleet/v1/previews/a/r/chart.png") == (200, PNG)
    for refused in (
        "/ann/cars/fleet/v1/files/photo.png",  # a dataset's own image is not a preview
        "/ann/cars/fleet/v1/previews/a/r/notes.txt",
        "/ann/cars/fleet/v1/previews/a/r/",  # no listings
        "/",
        "/ann/cars/fleet/v1/previews/../../../../../secret.png",
        "/ann/cars/fleet/v1/previews/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.png",
        "/ann/cars/fleet/v1/previews/a/r/link.png",  # a symlink out of the storage
        "/ann/cars/fleet/v1/previews/a/r/missing.png",
    ):
        assert get(preview_url + refused)[0] == 404, refused
