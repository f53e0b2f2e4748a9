"""Hostile uploads are rejected before anything is written, and a rejection leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import stat
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from dataset_pipeline.domain import safe_extract
from dataset_pipeline.domain.model import DatasetError, Severity
from dataset_pipeline.domain.safe_extract import (
    ExtractionLimits,
    UnsafeArchiveError,
    copy_folder,
    extract_zip,
    sha256_file,
)

LIMITS = ExtractionLimits()


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """The folder destinations live in; after a rejection it must be empty (no staging, no destination)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def make_zip(
    path: Path,
    entries: dict[str, bytes],
    *,
    compression: int = zipfile.ZIP_STORED,
    tweak: Callable[[zipfile.ZipFile], None] | None = None,
) -> Path:
    """Write a zip; `tweak` may edit the central directory records after the data is written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicates some tests need
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in entries.items():
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
            if tweak is not None:
                tweak(zf)
    return path


def assert_rejected(
    archive: Path, out_dir: Path, match: str, entry: str | None, limits: ExtractionLimits = LIMITS
) -> None:
    """The upload is refused with an error naming the archive and the offending `entry` (None: the archive as
    a whole), and neither the destination nor a staging folder is left behind."""
    with pytest.raises(DatasetError, match=match) as caught:
        extract_zip(archive, out_dir / "dataset", limits)
    assert archive.name in str(caught.value)
    assert getattr(caught.value, "entry", None) == entry
    if entry is not None:
        assert f"entry {entry!r}" in str(caught.value)
    assert list(out_dir.iterdir()) == []


def test_extracts_tree_with_fixed_modes_and_skips_junk(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(
        tmp_path / "upload.zip",
        {
            "images/": b"",
            "images/a.jpg": b"a" * 100,
            "labels\\a.txt": b"0 0.5 0.5 0.1 0.1\n",
            "__MACOSX/images/._a.jpg": b"junk",
            "images/.DS_Store": b"junk",
        },
        compression=zipfile.ZIP_DEFLATED,
    )
    report = extract_zip(archive, out_dir / "dataset", LIMITS)

    dest = out_dir / "dataset"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "images",
        "images/a.jpg",
        "labels",
        "labels/a.txt",
    ]
    assert (report.files_written, report.bytes_written, report.junk_skipped) == (2, 118, 2)
    assert stat.S_IMODE(os.stat(dest / "images/a.jpg").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(dest / "labels").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    assert os.stat(dest / "images/a.jpg").st_mtime > time.time() - 3600  # not the archive's 1980 stamp
    assert [p.name for p in out_dir.iterdir()] == ["dataset"]


def test_backslash_folder_entries_of_old_windows_zippers_are_folders(tmp_path: Path, out_dir: Path) -> None:
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in (("images\\", b""), ("images\\a.jpg", b"a"), ("empty\\", b"")):
            info = zipfile.ZipInfo(name)
            info.create_system = 0  # MS-DOS
            info.external_attr = 0x10 if name.endswith("\\") else 0x20  # DOS directory / archive attribute
            zf.writestr(info, data)
    report = extract_zip(archive, out_dir / "dataset", LIMITS)
    dest = out_dir / "dataset"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "empty",
        "images",
        "images/a.jpg",
    ]
    assert (dest / "empty").is_dir() and report.files_written == 1


def test_existing_destination_is_refused(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(tmp_path / "upload.zip", {"a.jpg": b"x"})
    (out_dir / "dataset").mkdir()
    with pytest.raises(FileExistsError):
        extract_zip(archive, out_dir / "dataset", LIMITS)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../evil.txt", r"'\.\.'"),
        ("images/../../evil.txt", r"'\.\.'"),
        ("..\\evil.txt", r"'\.\.'"),
        ("/etc/evil.txt", "absolute path"),
        ("\\evil.txt", "absolute path"),
        ("C:/evil.txt", "drive letter"),
        ("c:evil.txt", "drive letter"),
        ("a\x01b.jpg", "control character"),
        ("a/./../../evil.txt", r"'\.\.'"),
        ("\\\\server\\share\\evil.txt", "absolute path"),
        ("D:\\evil.txt", "drive letter"),
    ],
)
def test_escaping_names_are_rejected(tmp_path: Path, out_dir: Path, name: str, match: str) -> None:
    archive = make_zip(tmp_path / "upload.zip", {"ok.jpg": b"x", name: b"x"})
    assert_rejected(archive, out_dir, match, name)


def test_nul_in_name_is_rejected(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(tmp_path / "upload.zip", {"aXb.jpg": b"x"})
    archive.write_bytes(archive.read_bytes().replace(b"aXb.jpg", b"a\x00b.jpg"))  # local header and directory
    assert_rejected(archive, out_dir, "NUL", "a\x00b.jpg")


def test_symlink_entry_is_rejected(tmp_path: Path, out_dir: Path) -> None:
    link = zipfile.ZipInfo("images/link.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    assert_rejected(archive, out_dir, "symbolic link", "images/link.jpg")


def test_special_file_entry_is_rejected(tmp_path: Path, out_dir: Path) -> None:
    fifo = zipfile.ZipInfo("pipe")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(fifo, b"")
    assert_rejected(archive, out_dir, "not a regular file", "pipe")


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        ("images/a.jpg", "images/a.jpg", "images/a.jpg"),
        ("Café.jpg", "Cafe\u0301.jpg", "Cafe\u0301.jpg"),  # NFC: é precomposed vs e + combining accent
        ("A.jpg", "a.jpg", "a.jpg"),
        ("Images/a.jpg", "images/b.jpg", "images/"),  # folders collide too
        ("x", "x/y.jpg", "x/"),
        ("x/y.jpg", "X", "X"),
        ("STRASSE.jpg", "straße.jpg", "straße.jpg"),  # casefold, not lower(): ß folds to ss
        ("CAFÉ.jpg", "cafe\u0301.jpg", "cafe\u0301.jpg"),  # NFC and casefold together
    ],
)
def test_duplicate_names_are_rejected(
    tmp_path: Path, out_dir: Path, first: str, second: str, named: str
) -> None:
    archive = make_zip(tmp_path / "upload.zip", {first: b"1"})
    # appending keeps exact duplicates that the dict given to make_zip could not hold
    with zipfile.ZipFile(archive, "a") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zf.writestr(zipfile.ZipInfo(second), b"2")
    assert_rejected(archive, out_dir, "same name", named)


def test_too_many_entries_are_rejected(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(tmp_path / "upload.zip", {f"{i}.txt": b"" for i in range(5)})
    assert_rejected(archive, out_dir, "5 entries", None, ExtractionLimits(max_entries=3))


def test_total_size_over_the_limit_is_rejected(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(tmp_path / "upload.zip", {"a.bin": b"a" * 600, "b.bin": b"b" * 600})
    assert_rejected(archive, out_dir, "limit of 1000 bytes", "b.bin", ExtractionLimits(max_total_bytes=1000))


def test_entry_over_the_limit_is_rejected(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(tmp_path / "upload.zip", {"a.bin": b"a" * 600})
    assert_rejected(archive, out_dir, "over the limit of 500", "a.bin", ExtractionLimits(max_entry_bytes=500))


def test_compression_ratio_bomb_is_rejected(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(
        tmp_path / "bomb.zip", {"zeros.bin": bytes(50_000_000)}, compression=zipfile.ZIP_DEFLATED
    )
    assert archive.stat().st_size < 200_000
    assert_rejected(archive, out_dir, "zip bomb", "zeros.bin")


@pytest.mark.parametrize("shift", [0, 10])
def test_overlapping_entries_are_rejected(tmp_path: Path, out_dir: Path, shift: int) -> None:
    def point_second_into_first(zf: zipfile.ZipFile) -> None:
        first, second = zf.infolist()
        second.header_offset = first.header_offset + shift

    archive = make_zip(
        tmp_path / "upload.zip", {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000}, tweak=point_second_into_first
    )
    assert_rejected(archive, out_dir, "overlaps", "b.bin")


@pytest.mark.parametrize("name", ["images/more.ZIP", "data/labels.tar.gz", "extra.7z", "a.rar"])
def test_nested_archive_is_rejected(tmp_path: Path, out_dir: Path, name: str) -> None:
    inner = make_zip(tmp_path / "inner.zip", {"a.jpg": b"x"})
    archive = make_zip(tmp_path / "upload.zip", {"ok.jpg": b"x", name: inner.read_bytes()})
    assert_rejected(archive, out_dir, "nested archives are not unpacked", name)


def test_encrypted_entry_is_rejected(tmp_path: Path, out_dir: Path) -> None:
    def set_encrypted_flag(zf: zipfile.ZipFile) -> None:
        zf.infolist()[0].flag_bits |= 0x1

    archive = make_zip(tmp_path / "upload.zip", {"a.jpg": b"x"}, tweak=set_encrypted_flag)
    assert_rejected(archive, out_dir, "encrypted", "a.jpg")


def test_truncated_zip_is_a_dataset_error(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(tmp_path / "upload.zip", {"a.bin": os.urandom(5000)})
    archive.write_bytes(archive.read_bytes()[:2500])
    assert_rejected(archive, out_dir, "corrupt, truncated", None)


def test_crc_error_while_writing_removes_staging(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(tmp_path / "upload.zip", {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000})
    data = bytearray(archive.read_bytes())
    data[data.index(b"b" * 1000) + 500] = ord("c")  # the first entry is written before the damage is met
    archive.write_bytes(bytes(data))
    assert_rejected(archive, out_dir, "corrupt", None)


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_broken_compressed_stream_is_a_dataset_error(tmp_path: Path, out_dir: Path, compression: int) -> None:
    archive = make_zip(tmp_path / "upload.zip", {"a.txt": b"label line\n" * 500}, compression=compression)
    with zipfile.ZipFile(archive) as zf:
        info = zf.infolist()[0]
        data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = bytearray(archive.read_bytes())
    for offset in range(data_start + 4, data_start + info.compress_size - 4):
        data[offset] ^= 0x5A
    archive.write_bytes(bytes(data))
    assert_rejected(archive, out_dir, "corrupt", None)


@pytest.mark.parametrize(
    ("declared", "match"),
    [(100, "more than its declared 100 bytes"), (10_000, "produces 5000 bytes but declares 10000")],
)
def test_lying_declared_size_is_rejected(tmp_path: Path, out_dir: Path, declared: int, match: str) -> None:
    def misstate_size(zf: zipfile.ZipFile) -> None:
        zf.infolist()[0].file_size = declared

    archive = make_zip(
        tmp_path / "upload.zip",
        {"a.bin": os.urandom(5000)},
        compression=zipfile.ZIP_DEFLATED,
        tweak=misstate_size,
    )
    assert_rejected(archive, out_dir, match, "a.bin")


def test_entry_count_understated_in_the_end_record_is_still_rejected(tmp_path: Path, out_dir: Path) -> None:
    archive = make_zip(tmp_path / "upload.zip", {f"{i}.txt": b"" for i in range(5)})
    data = bytearray(archive.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    data[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2  # entries on this disk, entries in total
    archive.write_bytes(bytes(data))
    assert_rejected(archive, out_dir, "holds 5 entries", None, ExtractionLimits(max_entries=3))


def test_many_small_entries_over_the_total_ratio_are_rejected(tmp_path: Path, out_dir: Path) -> None:
    # Each entry is under the size from which single entries are judged by ratio; together they are a bomb.
    archive = make_zip(
        tmp_path / "upload.zip",
        {f"{i}.bin": bytes(600_000) for i in range(3)},
        compression=zipfile.ZIP_DEFLATED,
    )
    assert_rejected(archive, out_dir, "zip bomb", None)


def test_unsupported_compression_method_is_rejected(tmp_path: Path, out_dir: Path) -> None:
    def claim_aes(zf: zipfile.ZipFile) -> None:
        zf.infolist()[0].compress_type = 99  # WinZip AES

    archive = make_zip(tmp_path / "upload.zip", {"a.jpg": b"x"}, tweak=claim_aes)
    assert_rejected(archive, out_dir, "compression method 99", "a.jpg")


def test_copy_folder_records_links_and_special_files(tmp_path: Path, out_dir: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    source = tmp_path / "upload"
    (source / "images").mkdir(parents=True)
    (source / "images" / "a.jpg").write_bytes(b"a" * 10)
    (source / ".DS_Store").write_bytes(b"junk")
    (source / "images" / "link.jpg").symlink_to(outside / "secret.txt")
    (source / "linked_dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(source / "pipe")

    report = copy_folder(source, out_dir / "dataset", LIMITS)

    dest = out_dir / "dataset"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["images", "images/a.jpg"]
    assert (report.files_written, report.bytes_written, report.junk_skipped) == (1, 10, 1)
    assert {(issue.code, issue.file, issue.severity) for issue in report.issues} == {
        ("upload.symlink", "images/link.jpg", Severity.ERROR),
        ("upload.symlink", "linked_dir", Severity.ERROR),
        ("upload.special_file", "pipe", Severity.ERROR),
    }
    assert stat.S_IMODE(os.stat(dest / "images/a.jpg").st_mode) == 0o644
    assert [p.name for p in out_dir.iterdir()] == ["dataset"]


def test_copy_folder_rejects_case_duplicates_and_limits(tmp_path: Path, out_dir: Path) -> None:
    source = tmp_path / "upload"
    source.mkdir()
    (source / "A.jpg").write_bytes(b"1")
    (source / "a.jpg").write_bytes(b"2")
    with pytest.raises(UnsafeArchiveError, match="same name"):
        copy_folder(source, out_dir / "dataset", LIMITS)
    (source / "A.jpg").unlink()
    with pytest.raises(UnsafeArchiveError, match="limit of 0 bytes"):
        copy_folder(source, out_dir / "dataset", ExtractionLimits(max_total_bytes=0))
    assert list(out_dir.iterdir()) == []


def test_sha256_file_streams(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert sha256_file(path, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def assert_folder_rejected(
    source: Path, out_dir: Path, match: str, entry: str, limits: ExtractionLimits = LIMITS
) -> None:
    with pytest.raises(UnsafeArchiveError, match=match) as caught:
        copy_folder(source, out_dir / "dataset", limits)
    assert caught.value.entry == entry and f"entry {entry!r}" in str(caught.value)
    assert list(out_dir.iterdir()) == []


def test_copy_folder_rejects_names_equal_after_nfc_and_casefold(tmp_path: Path, out_dir: Path) -> None:
    source = make_folder(tmp_path / "upload", {"CAFÉ.jpg": b"1", "cafe\u0301.jpg": b"2"})
    assert_folder_rejected(source, out_dir, "same name", "cafe\u0301.jpg")


def test_copy_folder_rejects_more_files_than_the_limit(tmp_path: Path, out_dir: Path) -> None:
    source = make_folder(tmp_path / "upload", {f"{i}.jpg": b"x" for i in range(5)})
    assert_folder_rejected(source, out_dir, "limit of 3 files", "3.jpg", ExtractionLimits(max_entries=3))


def test_copy_folder_rejects_a_file_over_the_entry_limit(tmp_path: Path, out_dir: Path) -> None:
    source = make_folder(tmp_path / "upload", {"a.jpg": b"x" * 600})
    assert_folder_rejected(
        source, out_dir, "more than the limit of 500", "a.jpg", ExtractionLimits(max_entry_bytes=500)
    )


def test_copy_folder_records_a_link_even_to_a_file_of_the_upload(tmp_path: Path, out_dir: Path) -> None:
    source = make_folder(tmp_path / "upload", {"images/a.jpg": b"a"})
    (source / "images/b.jpg").symlink_to("a.jpg")
    report = copy_folder(source, out_dir / "dataset", LIMITS)
    assert [(i.severity, i.code, i.file) for i in report.issues] == [
        (Severity.ERROR, "upload.symlink", "images/b.jpg")
    ]
    assert not (out_dir / "dataset/images/b.jpg").exists()


def test_copy_folder_refuses_a_linked_upload_folder(tmp_path: Path, out_dir: Path) -> None:
    real = make_folder(tmp_path / "real", {"a.jpg": b"a"})
    (tmp_path / "upload").symlink_to(real, target_is_directory=True)
    with pytest.raises(DatasetError, match="not a plain folder"):
        copy_folder(tmp_path / "upload", out_dir / "dataset", LIMITS)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("swap", ["grow", "link"])
def test_copy_folder_removes_staging_when_a_file_changes_during_the_copy(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    source = make_folder(tmp_path / "upload", {"a.jpg": b"a" * 10, "b.jpg": b"b" * 10})
    scan = safe_extract._scan_folder

    def scan_then_change(folder: Path, limits: ExtractionLimits) -> object:
        found = scan(folder, limits)
        target = folder / "b.jpg"  # copied after a.jpg, so a.jpg is already in the staging folder
        if swap == "grow":
            target.write_bytes(b"b" * 20)
        else:
            target.unlink()
            target.symlink_to(tmp_path / "secret")
        return found

    (tmp_path / "secret").write_bytes(b"secret")
    monkeypatch.setattr(safe_extract, "_scan_folder", scan_then_change)
    with pytest.raises(DatasetError, match=r"'b\.jpg' changed while the upload was being copied"):
        copy_folder(source, out_dir / "dataset", LIMITS)
    assert list(out_dir.iterdir()) == []
