"""Decode every uploaded image once, in worker processes, and record what its bytes really are.

An image is only trustworthy once it has been decoded to the end: `Image.verify()` and header reads accept
truncated JPEGs, PNGs named `.jpg` and decompression bombs. The facts gathered here (upright size, mode, EXIF
orientation, a perceptual hash) feed validation, deduplication and export. No Dagster.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dataset_pipeline.domain.model import ImageFacts, Issue, Severity

#: Pillow's own default; above it an image needs more than ~270 MB as RGB.
DEFAULT_MAX_PIXELS = 89_478_485
#: Formats Pillow may open (JPEG includes camera MPO files). Anything else is refused: EPS runs Ghostscript.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO is a camera JPEG with extra frames; .jpg is right for it
_INLINE_BELOW = 32
_ORIENTATION_TAG = 274
_TRANSPOSE_FOR_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Pillow's TIFF plugin already reports the upright size and rotates the pixels itself when loading.
_SELF_ORIENTING_FORMATS = frozenset({"TIFF"})
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def check_image(root: Path, relative_path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """Learn everything validation needs from one image; never raises for bad image bytes.

    Top-level and free of shared state so it can run in spawned worker processes.
    """
    data = (root / relative_path).read_bytes()
    facts = _Facts(relative_path, hashlib.sha256(data).hexdigest(), len(data))
    if not data:
        facts.error("image.empty", "the file is empty (0 bytes)")
        return facts.build()

    previous_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            _inspect(data, facts)
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    return facts.build()


def check_images(
    root: Path,
    relative_paths: Sequence[str],
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunksize: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[ImageFacts]:
    """Check many images in a process pool and return their facts in the order of `relative_paths`.

    The pool uses *spawn*: the caller has threads and database connections a forked child must not inherit.
    """
    total = len(relative_paths)
    step = max(1, min(500, math.ceil(total * 0.05)))
    task = functools.partial(check_image, root, max_pixels=max_pixels)
    workers = max(1, min(workers or os.cpu_count() or 1, math.ceil(total / max(chunksize, 1)) or 1))
    results: list[ImageFacts] = []

    def collect(facts: ImageFacts) -> None:
        results.append(facts)
        done = len(results)
        if progress is not None and (done % step == 0 or done == total):
            progress(done, total)

    if total < _INLINE_BELOW or workers == 1:
        for relative_path in relative_paths:
            collect(task(relative_path))
        return results

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for facts in pool.map(task, relative_paths, chunksize=chunksize):
            collect(facts)
    return results


def load_upright_rgb(path: Path) -> np.ndarray:
    """Pixels as an HxWx3 uint8 array, upright, with CMYK, 16-bit, palettes and alpha converted explicitly."""
    with Image.open(path, formats=ALLOWED_FORMATS) as image:
        upright = _upright_8bit(image)
    return np.array(upright.convert("RGB"), dtype=np.uint8)


def upright_jpeg_bytes(path: Path, quality: int = 95) -> bytes | None:
    """Re-encoded JPEG bytes, or None when the file is an upright RGB/L JPEG or PNG that export copies as is
    (under its own name: every detection reader takes both)."""
    with Image.open(path, formats=ALLOWED_FORMATS) as image:
        orientation = _orientation(image)
        copyable = image.format in _JPEG_FORMATS or image.format == "PNG"
        if copyable and image.mode in ("RGB", "L") and orientation == 1:
            return None
        keep_profile = image.mode == "RGB"
        icc_profile = image.info.get("icc_profile") if keep_profile else None
        upright = _upright_8bit(image)
    buffer = io.BytesIO()
    options: dict[str, object] = {"quality": quality}
    if icc_profile:
        options["icc_profile"] = icc_profile
    upright.save(buffer, "JPEG", **options)
    return buffer.getvalue()


# --- internals ------------------------------------------------------------------------------------------


class _Facts:
    """Mutable collector turned into the frozen `ImageFacts` once the image has been looked at."""

    def __init__(self, path: str, sha256: str, size_bytes: int) -> None:
        self.path = path
        self.sha256 = sha256
        self.size_bytes = size_bytes
        self.format: str | None = None
        self.width = 0
        self.height = 0
        self.mode: str | None = None
        self.orientation = 1
        self.dhash: int | None = None
        self.issues: list[Issue] = []

    def add(self, severity: Severity, code: str, message: str) -> None:
        self.issues.append(Issue(severity, code, self.path, message, image=self.path))

    def error(self, code: str, message: str) -> None:
        self.add(Severity.ERROR, code, message)

    def build(self) -> ImageFacts:
        return ImageFacts(
            path=self.path,
            sha256=self.sha256,
            size_bytes=self.size_bytes,
            format=self.format,
            width=self.width,
            height=self.height,
            mode=self.mode,
            exif_orientation=self.orientation,
            dhash=self.dhash,
            issues=tuple(self.issues),
        )


def _inspect(data: bytes, facts: _Facts) -> None:
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        facts.error("image.decompression_bomb", f"refused to decode: {error}")
        return
    except UnidentifiedImageError:
        facts.error(
            "image.undecodable", f"not an image in a supported format ({', '.join(sorted(ALLOWED_FORMATS))})"
        )
        return
    except Exception as error:  # any parser failure means the same: unusable bytes
        facts.error("image.undecodable", f"cannot be read as an image: {error}")
        return

    with image:
        facts.format = image.format
        facts.mode = image.mode
        _check_extension(image.format, facts)
        try:
            facts.orientation = _orientation(image)
        except Exception as error:  # malformed EXIF must not hide the other facts
            facts.add(
                Severity.WARNING, "image.exif_invalid", f"EXIF cannot be read ({error}); assumed upright"
            )
        pending = 1 if image.format in _SELF_ORIENTING_FORMATS else facts.orientation
        width, height = image.size
        facts.width, facts.height = (height, width) if pending in (5, 6, 7, 8) else (width, height)
        _record_mode(image, facts)
        try:
            if image.format in _JPEG_FORMATS:
                # DCT scaling still entropy-decodes the whole stream (so truncation is caught), ~2x faster.
                image.draft(
                    "L" if image.mode in ("RGB", "L") else None, (max(9, width // 8), max(8, height // 8))
                )
            image.load()
            facts.dhash = _dhash(image, pending)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            facts.error("image.decompression_bomb", f"refused to decode: {error}")
        except EOFError as error:
            facts.error("image.truncated", f"the image data ends early ({error or 'unexpected end of file'})")
        except Exception as error:  # decoders raise OSError, SyntaxError, ValueError...
            if "truncated" in str(error):
                facts.error("image.truncated", f"the image data ends early ({error})")
            else:
                facts.error("image.undecodable", f"cannot be decoded: {error}")


@functools.cache
def _formats_for_extension() -> dict[str, str]:
    return {extension.lower(): name for extension, name in Image.registered_extensions().items()}


def _check_extension(real_format: str | None, facts: _Facts) -> None:
    extension = os.path.splitext(facts.path)[1].lower()
    expected = _formats_for_extension().get(extension)
    if expected == real_format:
        return
    if expected in _JPEG_FORMATS and real_format in _JPEG_FORMATS:
        return
    facts.error(
        "image.format_mismatch",
        f"the file is {real_format} but its extension {extension or '(none)'!r} says "
        f"{expected or 'it is not an image'}; rename it to match its content",
    )


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _record_mode(image: Image.Image, facts: _Facts) -> None:
    mode = image.mode
    if mode == "CMYK":
        facts.add(Severity.WARNING, "image.cmyk", "CMYK colours; converted to RGB on export")
    elif mode in _HIGH_BIT_DEPTH_MODES:
        facts.add(Severity.WARNING, "image.high_bit_depth", f"{mode} pixels; reduced to 8 bits on export")
    elif mode in ("P", "PA"):
        facts.add(Severity.INFO, "image.palette", "palette colours; expanded to RGB on export")
    elif mode not in ("RGB", "L", "1", "RGBA", "LA", "RGBa", "La", "YCbCr"):
        facts.add(Severity.WARNING, "image.unusual_mode", f"{mode} pixels; converted to RGB on export")
    if _has_alpha(image):
        facts.add(
            Severity.WARNING, "image.alpha", f"{mode} with transparency; flattened onto white on export"
        )


def _to_8bit(image: Image.Image) -> Image.Image:
    """Drop to 8 bits per channel by scaling, not clipping (Pillow's I->L conversion clips at 255)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), mode="L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else 255.0 / top
        return Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), mode="L")
    return image


def _upright_8bit(image: Image.Image) -> Image.Image:
    """EXIF rotation applied and pixels in RGB or L, with alpha flattened onto white."""
    orientation = 1 if image.format in _SELF_ORIENTING_FORMATS else _orientation(image)
    image.load()
    converted = _to_8bit(image)
    if _has_alpha(converted):
        rgba = converted.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        converted = Image.alpha_composite(white, rgba).convert("RGB")
    elif converted.mode not in ("RGB", "L"):
        converted = converted.convert("RGB")
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    return converted.transpose(transpose) if transpose is not None else converted


def _dhash(image: Image.Image, orientation: int) -> int:
    """64-bit difference hash of the upright image as a signed int64 (PostgreSQL bigint).

    Hashing upright pixels makes a photo with an EXIF rotation match a copy that was physically rotated.
    """
    gray = _to_8bit(image)
    if gray.mode != "L":
        gray = gray.convert("L")
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    if transpose is not None:
        gray = gray.transpose(transpose)
    pixels = np.asarray(gray.resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value - (1 << 64) if value >= 1 << 63 else value
