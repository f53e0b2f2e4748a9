"""Every image is decoded to the end, and what its bytes really are is recorded as facts and issues."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from dataset_pipeline.domain.image_checks import (
    check_image,
    check_images,
    load_upright_rgb,
    upright_jpeg_bytes,
)
from dataset_pipeline.domain.model import ImageFacts, Severity


def save(
    image: Image.Image, root: Path, name: str, image_format: str | None = None, **options: object
) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, image_format, **options)
    return name


def blocks(seed: int, size: tuple[int, int] = (288, 256)) -> Image.Image:
    """A 9x8 grid of flat blocks whose neighbours differ strongly, so its dHash survives re-encoding."""
    rng = np.random.default_rng(seed)
    grid = np.empty((8, 9), dtype=np.int64)
    for row in range(8):
        value = int(rng.integers(60, 196))
        for col in range(9):
            grid[row, col] = value
            step = int(rng.integers(40, 60)) * (1 if rng.random() < 0.5 else -1)
            value = value + step if 0 <= value + step <= 255 else value - step
    pixels = np.repeat(grid.astype(np.uint8), 3).reshape(8, 9, 3)
    return Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST)


def codes(facts: ImageFacts) -> dict[str, Severity]:
    assert all(issue.file == facts.path and issue.image == facts.path for issue in facts.issues)
    return {issue.code: issue.severity for issue in facts.issues}


def test_valid_jpeg_facts(tmp_path: Path) -> None:
    name = save(Image.new("RGB", (64, 48), (10, 200, 30)), tmp_path, "images/a.jpg")
    facts = check_image(tmp_path, name)
    data = (tmp_path / name).read_bytes()
    assert (facts.path, facts.format, facts.mode, facts.width, facts.height) == (name, "JPEG", "RGB", 64, 48)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert facts.size_bytes == len(data)
    assert facts.exif_orientation == 1
    assert facts.dhash is not None and -(2**63) <= facts.dhash < 2**63
    assert facts.issues == () and facts.usable


def test_valid_png_facts(tmp_path: Path) -> None:
    name = save(Image.new("L", (30, 20), 128), tmp_path, "b.png")
    facts = check_image(tmp_path, name)
    assert (facts.format, facts.mode, facts.width, facts.height) == ("PNG", "L", 30, 20)
    assert facts.issues == ()


def test_truncated_jpeg_is_caught_in_draft_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    blocks(1, (512, 512)).save(buffer, "JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    drafts: list[object] = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        result = original_draft(self, mode, size)
        drafts.append(result)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    facts = check_image(tmp_path, "cut.jpg")
    assert drafts and drafts[0] is not None  # the reduced decode really was in effect
    assert codes(facts) == {"image.truncated": Severity.ERROR}
    assert (facts.width, facts.height) == (512, 512)
    assert not facts.usable


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_passes_verify_but_not_the_check(tmp_path: Path, progressive: bool) -> None:
    buffer = io.BytesIO()
    blocks(2, (256, 256)).save(buffer, "JPEG", quality=90, progressive=progressive)
    data = buffer.getvalue()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    with Image.open(tmp_path / "cut.jpg") as image:
        image.verify()  # what a header-only check would accept
    facts = check_image(tmp_path, "cut.jpg")
    assert codes(facts) == {"image.truncated": Severity.ERROR}
    assert not facts.usable


def test_jpeg_missing_only_its_end_marker_is_truncated(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    blocks(3, (64, 64)).save(buffer, "JPEG")
    (tmp_path / "no_eoi.jpg").write_bytes(buffer.getvalue()[:-2])
    assert "image.truncated" in codes(check_image(tmp_path, "no_eoi.jpg"))


def test_truncated_png_is_caught(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    facts = check_image(tmp_path, "cut.png")
    assert codes(facts).get("image.truncated") is Severity.ERROR
    assert not facts.usable


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    facts = check_image(tmp_path, "empty.jpg")
    assert codes(facts) == {"image.empty": Severity.ERROR}
    assert facts.format is None and facts.sha256 == hashlib.sha256(b"").hexdigest()


def test_png_named_jpg_is_a_format_mismatch(tmp_path: Path) -> None:
    name = save(Image.new("RGB", (8, 8)), tmp_path, "fake.jpg", "PNG")
    facts = check_image(tmp_path, name)
    assert codes(facts) == {"image.format_mismatch": Severity.ERROR}
    message = facts.issues[0].message
    assert "PNG" in message and ".jpg" in message and "JPEG" in message
    assert facts.format == "PNG" and facts.width == 8


@pytest.mark.parametrize(
    ("name", "image_format", "real"), [("fake.png", "JPEG", "JPEG"), ("fake.jpg", "BMP", "BMP")]
)
def test_content_other_than_the_extension_is_a_format_mismatch(
    tmp_path: Path, name: str, image_format: str, real: str
) -> None:
    save(Image.new("RGB", (8, 8)), tmp_path, name, image_format)
    facts = check_image(tmp_path, name)
    assert codes(facts) == {"image.format_mismatch": Severity.ERROR}
    assert real in facts.issues[0].message and name[-4:] in facts.issues[0].message


def test_garbage_is_undecodable(tmp_path: Path) -> None:
    (tmp_path / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    facts = check_image(tmp_path, "noise.png")
    assert codes(facts) == {"image.undecodable": Severity.ERROR}
    assert facts.issues[0].message


@pytest.mark.parametrize("max_pixels", [30_000, 1_000])  # warning range (1-2x the limit) and error range
def test_decompression_bomb_is_refused(tmp_path: Path, max_pixels: int) -> None:
    name = save(Image.new("L", (200, 200)), tmp_path, "bomb.png")
    before = Image.MAX_IMAGE_PIXELS
    facts = check_image(tmp_path, name, max_pixels=max_pixels)
    assert codes(facts) == {"image.decompression_bomb": Severity.ERROR}
    assert before == Image.MAX_IMAGE_PIXELS


def test_exif_orientation_6_reports_upright_size(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[274] = 6  # display rotated 90 degrees clockwise
    name = save(stored, tmp_path, "rotated.jpg", exif=exif, quality=95)

    facts = check_image(tmp_path, name)
    assert (facts.width, facts.height, facts.exif_orientation) == (20, 40, 6)

    pixels = load_upright_rgb(tmp_path / name)
    assert pixels.shape == (40, 20, 3) and pixels.dtype == np.uint8
    assert pixels[2, 10, 0] > 200 and pixels[2, 10, 2] < 60  # the left (red) side is now on top
    assert pixels[-3, 10, 2] > 200 and pixels[-3, 10, 0] < 60

    encoded = upright_jpeg_bytes(tmp_path / name)
    assert encoded is not None
    with Image.open(io.BytesIO(encoded)) as upright:
        assert upright.size == (20, 40) and upright.getexif().get(274) is None


#: The transpose that turns an upright picture into the pixels a camera stores with each EXIF orientation.
_STORED_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def marked_upright() -> Image.Image:
    """64x32, blue, with a red 16x16 square in the top-left corner: every orientation moves the square."""
    image = Image.new("RGB", (64, 32), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 16, 16))
    return image


def stored_with_orientation(root: Path, name: str, orientation: int) -> str:
    upright = marked_upright()
    transpose = _STORED_FOR_ORIENTATION.get(orientation)
    stored = upright.transpose(transpose) if transpose is not None else upright
    exif = Image.Exif()
    exif[274] = orientation
    return save(stored, root, name, exif=exif, quality=95)


def red_square_top_left(pixels: np.ndarray) -> bool:
    return (
        pixels.shape == (32, 64, 3)
        and pixels[3:13, 3:13, 0].mean() > 200
        and pixels[3:13, 3:13, 2].mean() < 60
        and pixels[20:29, 40:60, 2].mean() > 200
    )


@pytest.mark.parametrize("extension", ["jpg", "png", "webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_the_same_upright_size_and_pixels(
    tmp_path: Path, extension: str, orientation: int
) -> None:
    name = stored_with_orientation(tmp_path, f"o{orientation}.{extension}", orientation)
    facts = check_image(tmp_path, name)
    assert (facts.width, facts.height, facts.exif_orientation) == (64, 32, orientation)
    assert red_square_top_left(load_upright_rgb(tmp_path / name))
    encoded = upright_jpeg_bytes(tmp_path / name)
    if encoded is not None:
        with Image.open(io.BytesIO(encoded)) as upright:
            assert upright.getexif().get(274) is None
            assert red_square_top_left(np.asarray(upright.convert("RGB")))


def test_dhash_of_an_exif_rotated_photo_matches_a_physically_rotated_copy(tmp_path: Path) -> None:
    upright = save(blocks(3), tmp_path, "upright.jpg", quality=90)
    exif = Image.Exif()
    exif[274] = 6
    rotated = save(blocks(3).transpose(Image.Transpose.ROTATE_90), tmp_path, "rotated.jpg", exif=exif)
    assert check_image(tmp_path, upright).dhash == check_image(tmp_path, rotated).dhash


def test_tiff_orientation_is_not_applied_twice(tmp_path: Path) -> None:
    stored = Image.new("RGB", (30, 10), (255, 0, 0))
    stored.paste((0, 0, 255), (15, 0, 30, 10))
    exif = Image.Exif()
    exif[274] = 6
    name = save(stored, tmp_path, "rotated.tif", exif=exif)
    facts = check_image(tmp_path, name)
    assert (facts.width, facts.height, facts.exif_orientation) == (10, 30, 6)
    pixels = load_upright_rgb(tmp_path / name)
    assert pixels.shape == (30, 10, 3)
    assert pixels[1, 5].tolist() == [255, 0, 0] and pixels[-2, 5].tolist() == [0, 0, 255]


def test_upright_rgb_jpeg_and_png_need_no_reencoding_other_files_do(tmp_path: Path) -> None:
    jpeg = save(Image.new("RGB", (16, 16)), tmp_path, "ok.jpg")
    png = save(Image.new("RGB", (16, 16)), tmp_path, "ok.png")
    rgba = save(Image.new("RGBA", (16, 16)), tmp_path, "alpha.png")
    bmp = save(Image.new("RGB", (16, 16)), tmp_path, "old.bmp")
    assert upright_jpeg_bytes(tmp_path / jpeg) is None
    assert upright_jpeg_bytes(tmp_path / png) is None  # every detection reader takes a PNG as it is
    assert upright_jpeg_bytes(tmp_path / rgba)[:2] == b"\xff\xd8"
    assert upright_jpeg_bytes(tmp_path / bmp)[:2] == b"\xff\xd8"


def test_cmyk_is_flagged_and_converted(tmp_path: Path) -> None:
    name = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path, "cmyk.jpg")
    facts = check_image(tmp_path, name)
    assert facts.mode == "CMYK"
    assert codes(facts) == {"image.cmyk": Severity.WARNING}
    pixels = load_upright_rgb(tmp_path / name)
    assert pixels.shape == (16, 16, 3) and pixels[8, 8, 0] > 200 and pixels[8, 8, 1] < 60


def test_sixteen_bit_is_flagged_and_scaled(tmp_path: Path) -> None:
    name = save(Image.new("I;16", (16, 16), 0x8000), tmp_path, "deep.png")
    facts = check_image(tmp_path, name)
    assert facts.mode is not None and facts.mode.startswith("I")
    assert codes(facts) == {"image.high_bit_depth": Severity.WARNING}
    assert facts.dhash is not None
    assert load_upright_rgb(tmp_path / name)[0, 0].tolist() == [128, 128, 128]  # scaled, not clipped to 255


def test_palette_and_transparent_palette(tmp_path: Path) -> None:
    plain = save(Image.new("RGB", (16, 16), (200, 10, 10)).convert("P"), tmp_path, "p.png")
    assert codes(check_image(tmp_path, plain)) == {"image.palette": Severity.INFO}

    transparent = Image.new("P", (16, 16), 0)
    transparent.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    name = save(transparent, tmp_path, "pt.png", transparency=0)
    assert codes(check_image(tmp_path, name)) == {
        "image.palette": Severity.INFO,
        "image.alpha": Severity.WARNING,
    }
    assert load_upright_rgb(tmp_path / name)[0, 0].tolist() == [255, 255, 255]


def test_alpha_is_flagged_and_flattened_on_white(tmp_path: Path) -> None:
    name = save(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), tmp_path, "rgba.png")
    assert codes(check_image(tmp_path, name)) == {"image.alpha": Severity.WARNING}
    assert load_upright_rgb(tmp_path / name)[5, 5].tolist() == [255, 255, 255]


def test_dhash_survives_reencoding_and_tells_images_apart(tmp_path: Path) -> None:
    original = save(blocks(7), tmp_path, "original.png")
    copy = save(blocks(7), tmp_path, "copy.jpg", quality=80)
    other = save(blocks(8), tmp_path, "other.png")
    hashes = [check_image(tmp_path, name).dhash for name in (original, copy, other)]
    assert hashes[0] == hashes[1]
    assert hashes[0] is not None and hashes[2] is not None
    assert bin((hashes[0] ^ hashes[2]) & (2**64 - 1)).count("1") > 10


def _tiny_images(root: Path, count: int) -> list[str]:
    names = []
    for index in range(count):
        extension, image_format = ("jpg", "JPEG") if index % 2 else ("png", "PNG")
        names.append(
            save(Image.new("RGB", (index + 1, 3)), root, f"img/{index:03d}.{extension}", image_format)
        )
    return names


def test_check_images_in_the_spawned_pool_keeps_order(tmp_path: Path) -> None:
    names = _tiny_images(tmp_path, 40)[::-1]
    calls: list[tuple[int, int]] = []
    results = check_images(
        tmp_path, names, workers=2, chunksize=8, progress=lambda d, t: calls.append((d, t))
    )
    assert [facts.path for facts in results] == names
    assert [facts.width for facts in results] == list(range(40, 0, -1))
    assert calls[-1] == (40, 40) and [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_check_images_runs_small_inputs_inline(tmp_path: Path) -> None:
    names = _tiny_images(tmp_path, 5)
    calls: list[tuple[int, int]] = []
    results = check_images(tmp_path, names, progress=lambda d, t: calls.append((d, t)))
    assert [facts.width for facts in results] == [1, 2, 3, 4, 5]
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
