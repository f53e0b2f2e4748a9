"""The inbox sensor's logic without Dagster: scanning, readiness over ticks, the cursor, paging and placing drops."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dataset_pipeline.domain import inbox as inbox_module
from dataset_pipeline.domain.inbox import (
    READY_MARKER,
    Drop,
    InboxCursor,
    InboxError,
    InboxScan,
    TickPlan,
    place_in_inbox,
    plan_tick,
    scan_inbox,
)

T0 = 1_700_000_000_000_000_000  # explicit mtimes (ns) make signatures deterministic
T1 = T0 + 5_000_000_000
T2 = T0 + 10_000_000_000
ZIP_BYTES = b"PK\x05\x06" + b"\x00" * 18  # an empty zip archive; the scan never reads it anyway


def write_file(path: Path, data: bytes = ZIP_BYTES, mtime_ns: int = T0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def append(path: Path, data: bytes, mtime_ns: int) -> None:
    with path.open("ab") as handle:
        handle.write(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_folder(path: Path, files: dict[str, bytes], mtime_ns: int = T0) -> Path:
    """A folder drop whose files and folders all carry `mtime_ns`."""
    for relative, data in files.items():
        write_file(path / relative, data, mtime_ns)
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        os.utime(folder, ns=(mtime_ns, mtime_ns))
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def tick(inbox: Path, cursor: InboxCursor, *, max_requests: int = 20, max_entries: int = 1000) -> TickPlan:
    """One sensor tick; the cursor goes through JSON as it does between real ticks."""
    cursor = InboxCursor.from_json(cursor.to_json())
    scan = scan_inbox(inbox, page_after=cursor.page_after, max_entries=max_entries)
    return plan_tick(scan, cursor, max_requests=max_requests)


def paths(drops: list[Drop]) -> list[str]:
    return [drop.relative_path for drop in drops]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


# --- Drop ------------------------------------------------------------------------------------------------


def test_signature_and_drop_id() -> None:
    drop = Drop("alice/cars/trucks.zip", "alice", "cars", "trucks", "zip", 10, 123)
    assert drop.signature == "10:123"
    assert drop.drop_id == "alice/cars/trucks.zip@10:123"
    grown = Drop("alice/cars/trucks.zip", "alice", "cars", "trucks", "zip", 11, 123)
    touched = Drop("alice/cars/trucks.zip", "alice", "cars", "trucks", "zip", 10, 124)
    assert len({drop.drop_id, grown.drop_id, touched.drop_id}) == 3


# --- scan_inbox ------------------------------------------------------------------------------------------


def test_scan_reports_zip_drop_from_stat(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / "trucks.zip", b"x" * 37, T1)
    scan = scan_inbox(inbox)
    assert scan.rejections == [] and scan.problems == [] and scan.part_files == set()
    assert scan.drops == [Drop("alice/cars/trucks.zip", "alice", "cars", "trucks", "zip", 37, T1)]


def test_scan_accepts_upper_case_zip_suffix(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / "Trucks.ZIP")
    [drop] = scan_inbox(inbox).drops
    assert (drop.name, drop.kind) == ("Trucks", "zip")


def test_scan_reports_folder_drop_with_total_size_and_newest_mtime(inbox: Path) -> None:
    folder = make_folder(
        inbox / "alice" / "cars" / "photos",
        {"images/a.jpg": b"a" * 10, "images/deep/b.jpg": b"b" * 20, "labels/a.txt": b"0 0.5 0.5 0.1 0.1\n"},
    )
    os.utime(folder / "images" / "deep" / "b.jpg", ns=(T2, T2))
    [drop] = scan_inbox(inbox).drops
    assert (drop.relative_path, drop.user, drop.project, drop.name, drop.kind) == (
        "alice/cars/photos",
        "alice",
        "cars",
        "photos",
        "folder",
    )
    assert drop.size == 10 + 20 + len(b"0 0.5 0.5 0.1 0.1\n")
    assert drop.mtime_ns == T2
    assert drop.has_ready_marker is False


def test_empty_or_missing_inbox_has_nothing(inbox: Path, tmp_path: Path) -> None:
    assert scan_inbox(inbox).drops == []
    missing = scan_inbox(tmp_path / "nope")
    assert (missing.drops, missing.rejections, missing.problems) == ([], [], [])


# --- readiness over ticks --------------------------------------------------------------------------------


def test_new_zip_waits_one_tick_then_is_ready(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / "trucks.zip")
    first = tick(inbox, InboxCursor())
    assert first.ready == [] and paths(first.waiting) == ["alice/cars/trucks.zip"]
    assert first.cursor.seen == {"alice/cars/trucks.zip": first.waiting[0].signature}
    assert first.cursor.requested == {}

    second = tick(inbox, first.cursor)
    assert paths(second.ready) == ["alice/cars/trucks.zip"] and second.waiting == []
    assert second.cursor.requested == {"alice/cars/trucks.zip": second.ready[0].signature}
    assert second.cursor.seen == {}


def test_growing_zip_keeps_waiting_until_unchanged(inbox: Path) -> None:
    path = write_file(inbox / "alice" / "cars" / "trucks.zip", b"x" * 100, T0)
    first = tick(inbox, InboxCursor())
    append(path, b"y" * 100, T1)
    second = tick(inbox, first.cursor)
    assert second.ready == [] and paths(second.waiting) == ["alice/cars/trucks.zip"]
    assert second.waiting[0].size == 200
    assert second.cursor.seen["alice/cars/trucks.zip"] == f"200:{T1}"
    third = tick(inbox, second.cursor)
    assert paths(third.ready) == ["alice/cars/trucks.zip"]


def test_touched_zip_with_same_size_keeps_waiting(inbox: Path) -> None:
    path = write_file(inbox / "alice" / "cars" / "trucks.zip", mtime_ns=T0)
    first = tick(inbox, InboxCursor())
    os.utime(path, ns=(T1, T1))
    second = tick(inbox, first.cursor)
    assert second.ready == [] and len(second.waiting) == 1


def test_part_file_seen_then_renamed_is_ready_at_once(inbox: Path) -> None:
    part = write_file(inbox / "alice" / "cars" / "trucks.zip.part")
    first = tick(inbox, InboxCursor())
    assert first.ready == [] and first.waiting == []
    assert first.cursor.parts == ["alice/cars/trucks.zip"]
    scan = scan_inbox(inbox)
    assert scan.part_files == {"alice/cars/trucks.zip"} and scan.drops == [] and scan.rejections == []

    part.rename(part.with_name("trucks.zip"))
    second = tick(inbox, first.cursor)
    assert paths(second.ready) == ["alice/cars/trucks.zip"]
    assert second.cursor.parts == []


def test_zip_that_never_was_a_part_is_not_ready_at_once(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / "other.zip.part")
    first = tick(inbox, InboxCursor())
    write_file(inbox / "alice" / "cars" / "trucks.zip")
    second = tick(inbox, first.cursor)
    assert second.ready == [] and paths(second.waiting) == ["alice/cars/trucks.zip"]


def test_folder_with_ready_marker_is_ready_at_once(inbox: Path) -> None:
    make_folder(inbox / "alice" / "cars" / "photos", {"a.jpg": b"a", READY_MARKER: b""})
    [drop] = scan_inbox(inbox).drops
    assert drop.has_ready_marker is True
    plan = tick(inbox, InboxCursor())
    assert paths(plan.ready) == ["alice/cars/photos"]


def test_folder_without_marker_waits_one_tick(inbox: Path) -> None:
    make_folder(inbox / "alice" / "cars" / "photos", {"a.jpg": b"a"})
    first = tick(inbox, InboxCursor())
    assert first.ready == [] and paths(first.waiting) == ["alice/cars/photos"]
    assert paths(tick(inbox, first.cursor).ready) == ["alice/cars/photos"]


def test_folder_signature_changes_when_a_file_inside_changes(inbox: Path) -> None:
    folder = make_folder(inbox / "alice" / "cars" / "photos", {"images/a.jpg": b"a" * 10, "b.jpg": b"b"})
    [before] = scan_inbox(inbox).drops
    first = tick(inbox, InboxCursor())

    append(folder / "images" / "a.jpg", b"more", T1)
    [grown] = scan_inbox(inbox).drops
    assert grown.signature != before.signature
    assert grown.size == before.size + 4
    second = tick(inbox, first.cursor)
    assert second.ready == [] and paths(second.waiting) == ["alice/cars/photos"]

    os.utime(folder / "b.jpg", ns=(T2, T2))  # same size, newer file
    [touched] = scan_inbox(inbox).drops
    assert touched.size == grown.size and touched.mtime_ns == T2
    assert touched.signature != grown.signature
    assert tick(inbox, second.cursor).ready == []


def test_requested_drop_is_not_ready_again_and_is_forgotten_when_gone(inbox: Path) -> None:
    path = write_file(inbox / "alice" / "cars" / "trucks.zip")
    cursor = tick(inbox, InboxCursor()).cursor
    second = tick(inbox, cursor)
    assert len(second.ready) == 1

    third = tick(inbox, second.cursor)  # the run has not moved it yet
    assert third.ready == [] and third.waiting == []
    assert third.cursor.requested == second.cursor.requested
    fourth = tick(inbox, third.cursor)
    assert fourth.ready == [] and fourth.cursor.requested == second.cursor.requested

    path.unlink()  # the run moved it out of the inbox
    gone = tick(inbox, fourth.cursor)
    assert gone.ready == [] and gone.waiting == []
    assert gone.cursor.requested == {} and gone.cursor.seen == {}


def test_changed_file_at_same_path_after_request_is_a_new_drop(inbox: Path) -> None:
    path = write_file(inbox / "alice" / "cars" / "trucks.zip", b"x" * 10, T0)
    requested = tick(inbox, tick(inbox, InboxCursor()).cursor)
    [first_drop] = requested.ready

    append(path, b"new content", T1)
    changed = tick(inbox, requested.cursor)
    assert changed.ready == [] and paths(changed.waiting) == ["alice/cars/trucks.zip"]
    again = tick(inbox, changed.cursor)
    [second_drop] = again.ready
    assert second_drop.relative_path == first_drop.relative_path
    assert second_drop.drop_id != first_drop.drop_id
    assert again.cursor.requested == {"alice/cars/trucks.zip": f"{10 + len(b'new content')}:{T1}"}


def test_vanished_drop_is_forgotten_from_seen(inbox: Path) -> None:
    path = write_file(inbox / "alice" / "cars" / "trucks.zip")
    first = tick(inbox, InboxCursor())
    path.unlink()
    second = tick(inbox, first.cursor)
    assert second.cursor.seen == {}
    write_file(path)  # back again: waits again rather than being "stable" from an old tick
    assert tick(inbox, second.cursor).ready == []


def test_max_requests_caps_ready_drops_and_the_rest_follow_next_tick(inbox: Path) -> None:
    for index in range(5):
        write_file(inbox / "alice" / "cars" / f"set{index}.zip")
    first = tick(inbox, InboxCursor(), max_requests=2)
    assert first.ready == [] and len(first.waiting) == 5
    second = tick(inbox, first.cursor, max_requests=2)
    assert paths(second.ready) == ["alice/cars/set0.zip", "alice/cars/set1.zip"]
    assert len(second.waiting) == 3
    third = tick(inbox, second.cursor, max_requests=2)
    assert paths(third.ready) == ["alice/cars/set2.zip", "alice/cars/set3.zip"]
    fourth = tick(inbox, third.cursor, max_requests=2)
    assert paths(fourth.ready) == ["alice/cars/set4.zip"]
    assert tick(inbox, fourth.cursor, max_requests=2).ready == []
    assert set(fourth.cursor.requested) == {f"alice/cars/set{index}.zip" for index in range(5)}


def test_max_requests_also_caps_ready_marker_and_renamed_part_drops(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / "a.zip.part")
    first = tick(inbox, InboxCursor(), max_requests=1)
    (inbox / "alice" / "cars" / "a.zip.part").rename(inbox / "alice" / "cars" / "a.zip")
    make_folder(inbox / "alice" / "cars" / "b", {"x.jpg": b"x", READY_MARKER: b""})
    second = tick(inbox, first.cursor, max_requests=1)
    assert paths(second.ready) == ["alice/cars/a.zip"] and paths(second.waiting) == ["alice/cars/b"]
    third = tick(inbox, second.cursor, max_requests=1)
    assert paths(third.ready) == ["alice/cars/b"]


# --- rejections and skipped entries ----------------------------------------------------------------------


def rejected(inbox: Path) -> dict[str, str]:
    scan = scan_inbox(inbox)
    assert scan.drops == []
    return {rejection.relative_path: rejection.reason for rejection in scan.rejections}


def test_file_directly_in_inbox_is_rejected(inbox: Path) -> None:
    write_file(inbox / "trucks.zip")
    assert "directly into the inbox" in rejected(inbox)["trucks.zip"]


def test_file_in_user_folder_is_rejected(inbox: Path) -> None:
    write_file(inbox / "alice" / "trucks.zip")
    assert "one folder deeper" in rejected(inbox)["alice/trucks.zip"]


@pytest.mark.parametrize("name", ["trucks.tar.gz", "trucks.rar", "trucks", "notes.txt"])
def test_non_zip_file_is_rejected(inbox: Path, name: str) -> None:
    write_file(inbox / "alice" / "cars" / name)
    assert "only <name>.zip" in rejected(inbox)[f"alice/cars/{name}"]


def test_symlinked_zip_and_folder_are_rejected(inbox: Path, tmp_path: Path) -> None:
    target_zip = write_file(tmp_path / "elsewhere" / "real.zip")
    target_folder = make_folder(tmp_path / "elsewhere" / "real", {"a.jpg": b"a"})
    project = inbox / "alice" / "cars"
    project.mkdir(parents=True)
    (project / "link.zip").symlink_to(target_zip)
    (project / "linkdir").symlink_to(target_folder, target_is_directory=True)
    reasons = rejected(inbox)
    assert set(reasons) == {"alice/cars/link.zip", "alice/cars/linkdir"}
    assert all("symlink" in reason for reason in reasons.values())


def test_symlinked_user_folder_is_not_followed(inbox: Path, tmp_path: Path) -> None:
    write_file(tmp_path / "elsewhere" / "cars" / "trucks.zip")
    (inbox / "alice").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert "alice" in rejected(inbox)


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("bad name/cars/trucks.zip", "user name 'bad name'"),
        ("alice/bad name/trucks.zip", "project name 'bad name'"),
        ("alice/cars/bad name.zip", "dataset name 'bad name'"),
        ("alice/cars/a..b.zip", "dataset name 'a..b'"),
        ("alice/cars/_rejected.zip", "dataset name '_rejected'"),
        ("alice/_rejected/trucks.zip", "project name '_rejected'"),
        ("alice/cars/inbox.zip", "reserved"),
        ("alice/cars/" + "a" * 65 + ".zip", "dataset name '" + "a" * 65 + "'"),
        ("alice/cars/-dash.zip", "dataset name '-dash'"),
    ],
)
def test_bad_names_are_rejected(inbox: Path, relative: str, reason: str) -> None:
    write_file(inbox / relative)
    reasons = rejected(inbox)
    assert list(reasons) == [relative]
    assert reason in reasons[relative]


def test_bad_folder_drop_name_is_rejected(inbox: Path) -> None:
    make_folder(inbox / "alice" / "cars" / "bad name", {"a.jpg": b"a", READY_MARKER: b""})
    assert "dataset name 'bad name'" in rejected(inbox)["alice/cars/bad name"]


def test_longest_allowed_name_is_accepted(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / ("a" * 64 + ".zip"))
    [drop] = scan_inbox(inbox).drops
    assert drop.name == "a" * 64


def test_hidden_entries_and_rejected_folder_are_skipped(inbox: Path) -> None:
    write_file(inbox / ".DS_Store")
    write_file(inbox / ".hidden" / "cars" / "trucks.zip")
    write_file(inbox / "_rejected" / "trucks.zip")
    write_file(inbox / "_rejected" / "alice" / "cars" / "trucks.zip")
    write_file(inbox / "_processing" / "alice" / "cars" / "trucks.zip")
    write_file(inbox / "alice" / ".DS_Store")
    write_file(inbox / "alice" / ".tmp" / "trucks.zip")
    write_file(inbox / "alice" / "cars" / ".trucks.zip")
    write_file(inbox / "alice" / "cars" / ".~lock.zip.part")
    write_file(inbox / "alice" / "cars" / "real.zip")
    scan = scan_inbox(inbox)
    assert paths(scan.drops) == ["alice/cars/real.zip"]
    assert scan.rejections == [] and scan.part_files == set() and scan.problems == []


def test_folder_with_too_many_files_is_rejected(inbox: Path) -> None:
    make_folder(inbox / "alice" / "cars" / "photos", {f"{index}.jpg": b"x" for index in range(4)})
    scan = scan_inbox(inbox, max_folder_files=3)
    assert scan.drops == []
    [rejection] = scan.rejections
    assert rejection.relative_path == "alice/cars/photos" and "zip it instead" in rejection.reason
    assert scan_inbox(inbox, max_folder_files=4).drops != []


def test_symlinks_inside_a_folder_drop_are_not_followed(inbox: Path, tmp_path: Path) -> None:
    outside = write_file(tmp_path / "big.bin", b"z" * 1000)
    folder = make_folder(inbox / "alice" / "cars" / "photos", {"a.jpg": b"a" * 3})
    (folder / "link.bin").symlink_to(outside)
    os.utime(folder, ns=(T0, T0))
    [drop] = scan_inbox(inbox).drops
    assert drop.size == 3


# --- unreadable entries ----------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unreadable_folder_is_a_problem_not_an_exception(inbox: Path) -> None:
    folder = make_folder(inbox / "alice" / "cars" / "photos", {"a.jpg": b"a"})
    write_file(inbox / "alice" / "cars" / "trucks.zip")
    folder.chmod(0)
    try:
        scan = scan_inbox(inbox)
    finally:
        folder.chmod(0o755)
    assert paths(scan.drops) == ["alice/cars/trucks.zip"]
    [problem] = scan.problems
    assert problem.startswith("alice/cars/photos:") and "skipped this tick" in problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unreadable_user_folder_is_a_problem_not_an_exception(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / "trucks.zip")
    write_file(inbox / "bob" / "cars" / "trucks.zip")
    (inbox / "alice").chmod(0)
    try:
        scan = scan_inbox(inbox)
    finally:
        (inbox / "alice").chmod(0o755)
    assert paths(scan.drops) == ["bob/cars/trucks.zip"]
    assert len(scan.problems) == 1 and "alice" in scan.problems[0]


def deny_scandir(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Make listing `denied` fail as a chmod 000 folder would (works as root too)."""
    real_scandir = os.scandir

    def scandir(path: os.PathLike[str] | str) -> object:
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(inbox_module.os, "scandir", scandir)


def test_folder_drop_that_cannot_be_listed_is_a_problem(inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(inbox / "alice" / "cars" / "photos", {"a.jpg": b"a"})
    write_file(inbox / "alice" / "cars" / "trucks.zip")
    deny_scandir(monkeypatch, folder)
    scan = scan_inbox(inbox)
    assert paths(scan.drops) == ["alice/cars/trucks.zip"] and scan.rejections == []
    [problem] = scan.problems
    assert problem.startswith("alice/cars/photos:") and "Permission denied" in problem
    # A problem is transient: the drop is neither requested nor forgotten for good.
    plan = plan_tick(scan, InboxCursor())
    assert paths(plan.waiting) == ["alice/cars/trucks.zip"]


def test_project_folder_that_cannot_be_listed_is_a_problem(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_file(inbox / "alice" / "cars" / "trucks.zip")
    write_file(inbox / "alice" / "vans" / "vans.zip")
    deny_scandir(monkeypatch, inbox / "alice" / "cars")
    scan = scan_inbox(inbox)
    assert paths(scan.drops) == ["alice/vans/vans.zip"]
    assert len(scan.problems) == 1 and "cars" in scan.problems[0] and "cannot list" in scan.problems[0]


# --- cursor ----------------------------------------------------------------------------------------------


def test_cursor_json_round_trip() -> None:
    cursor = InboxCursor(
        seen={"alice/cars/a.zip": "1:2"},
        parts=["bob/x/b.zip", "alice/cars/c.zip"],
        requested={"alice/cars/d": "3:4"},
        page_after="alice/cars/d",
    )
    back = InboxCursor.from_json(cursor.to_json())
    assert back.seen == cursor.seen and back.requested == cursor.requested
    assert back.parts == sorted(cursor.parts) and back.page_after == "alice/cars/d"
    assert InboxCursor.from_json(back.to_json()).to_json() == back.to_json()


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "{",
        "[]",
        "null",
        "42",
        '"text"',
        '{"seen": 5}',
        '{"seen": [1, 2]}',
        '{"parts": 7}',
        '{"requested": "x"}',
        '{"page_after": 5}',
        '{"page_after": ["a"]}',
    ],
)
def test_garbage_cursor_is_empty(text: str | None) -> None:
    cursor = InboxCursor.from_json(text)
    assert cursor == InboxCursor()


def test_garbage_cursor_costs_only_one_tick(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / "trucks.zip")
    cursor = InboxCursor.from_json('{"page_after": 5, "seen": {"alice/cars/trucks.zip": 1}}')
    first = plan_tick(scan_inbox(inbox, page_after=cursor.page_after), cursor)
    assert first.ready == []
    assert paths(tick(inbox, first.cursor).ready) == ["alice/cars/trucks.zip"]


# --- paging ----------------------------------------------------------------------------------------------


def test_in_page() -> None:
    scan = InboxScan(page_after="b", next_page_after="d")
    assert [scan.in_page(path) for path in ("a", "b", "c", "d", "e")] == [False, False, True, True, False]
    assert InboxScan().in_page("anything")
    assert InboxScan(page_after="b").in_page("z") and not InboxScan(page_after="b").in_page("a")


def test_scan_pages_through_a_large_inbox(inbox: Path) -> None:
    expected = []
    for user in ("alice", "bob"):
        for project in ("cars", "vans"):
            for index in range(3):
                write_file(inbox / user / project / f"set{index}.zip")
                expected.append(f"{user}/{project}/set{index}.zip")
    assert len(expected) == 12

    first = scan_inbox(inbox, max_entries=5)
    assert paths(first.drops) == expected[:5] and first.next_page_after == expected[4]
    second = scan_inbox(inbox, page_after=first.next_page_after, max_entries=5)
    assert paths(second.drops) == expected[5:10] and second.next_page_after == expected[9]
    third = scan_inbox(inbox, page_after=second.next_page_after, max_entries=5)
    assert paths(third.drops) == expected[10:] and third.next_page_after is None


def test_page_ends_exactly_at_the_last_entry(inbox: Path) -> None:
    for index in range(4):
        write_file(inbox / "alice" / "cars" / f"set{index}.zip")
    first = scan_inbox(inbox, max_entries=2)
    assert paths(first.drops) == ["alice/cars/set0.zip", "alice/cars/set1.zip"]
    second = scan_inbox(inbox, page_after=first.next_page_after, max_entries=2)
    assert paths(second.drops) == ["alice/cars/set2.zip", "alice/cars/set3.zip"]
    assert second.next_page_after is None  # back to the start, without an empty page in between
    assert second.in_page("alice/cars/set9.zip") and not second.in_page("alice/cars/set1.zip")


def test_paging_over_ticks_covers_all_drops_wraps_and_keeps_other_pages(inbox: Path) -> None:
    expected = set()
    for user in ("alice", "bob", "carol"):
        for index in range(3):
            write_file(inbox / user / "cars" / f"set{index}.zip")
            expected.add(f"{user}/cars/set{index}.zip")
    cursor = InboxCursor()
    scanned: list[str] = []
    for _ in range(3):  # first round: every drop is seen once, none is ready yet
        plan = tick(inbox, cursor, max_entries=4)
        assert plan.ready == []
        scanned += paths(plan.waiting)
        # Drops of earlier pages are still remembered although this tick did not look at them.
        assert set(scanned) == set(plan.cursor.seen)
        cursor = plan.cursor
    assert sorted(scanned) == sorted(expected) and len(scanned) == len(expected)
    assert cursor.page_after is None  # wrapped round

    ready: list[str] = []
    for _ in range(3):  # second round: each drop is unchanged since its page was last scanned
        plan = tick(inbox, cursor, max_entries=4)
        ready += paths(plan.ready)
        assert set(ready) == set(plan.cursor.requested)
        assert set(plan.cursor.seen) == expected - set(ready)
        cursor = plan.cursor
    assert sorted(ready) == sorted(expected) and len(ready) == len(expected)

    for _ in range(3):  # third round: nothing is requested twice
        plan = tick(inbox, cursor, max_entries=4)
        assert plan.ready == []
        assert set(plan.cursor.requested) == expected
        cursor = plan.cursor


def test_paging_follows_path_order_when_names_share_a_prefix(inbox: Path) -> None:
    """`a-b/...` and `a.b/...` sort before `a/...` as paths ('-' and '.' sort before '/')."""
    expected = []
    for user in ("a", "a-b", "a.b", "ab"):
        for project in ("p", "p-q"):
            for name in ("x.zip", "x-y.zip", "x"):
                relative = f"{user}/{project}/{name}"
                if name == "x":
                    make_folder(inbox / relative, {"1.jpg": b"1"})
                else:
                    write_file(inbox / relative)
                expected.append(relative)
    cursor = InboxCursor()
    scanned: list[str] = []
    for _ in range(len(expected)):
        scan = scan_inbox(inbox, page_after=cursor.page_after, max_entries=2)
        for drop in scan.drops:
            assert scan.in_page(drop.relative_path)
        scanned += paths(scan.drops)
        cursor = plan_tick(scan, cursor).cursor
        if cursor.page_after is None:
            break
    assert sorted(scanned) == sorted(expected)
    assert len(scanned) == len(expected)


def test_paging_keeps_part_files_of_other_pages(inbox: Path) -> None:
    write_file(inbox / "alice" / "cars" / "a.zip.part")
    for index in range(3):
        write_file(inbox / "bob" / "cars" / f"set{index}.zip")
    first = tick(inbox, InboxCursor(), max_entries=2)
    assert first.cursor.parts == ["alice/cars/a.zip"]
    second = tick(inbox, first.cursor, max_entries=2)
    assert second.cursor.parts == ["alice/cars/a.zip"]  # not on this page: still remembered
    (inbox / "alice" / "cars" / "a.zip.part").rename(inbox / "alice" / "cars" / "a.zip")
    third = tick(inbox, second.cursor, max_entries=2)
    assert "alice/cars/a.zip" in paths(third.ready)


def test_part_file_and_its_final_name_are_one_entry_for_paging(inbox: Path) -> None:
    """`a.zip.part` sorts after `a.zip-b.zip` by name but pages by `a.zip`; neither may be skipped."""
    project = inbox / "alice" / "cars"
    write_file(project / "a.zip.part")
    write_file(project / "a.zip-b.zip")
    write_file(project / "c.zip")
    seen_parts: set[str] = set()
    seen_drops: list[str] = []
    page_after = None
    for _ in range(5):
        scan = scan_inbox(inbox, page_after=page_after, max_entries=1)
        seen_parts |= scan.part_files
        seen_drops += paths(scan.drops)
        page_after = scan.next_page_after
        if page_after is None:
            break
    assert seen_parts == {"alice/cars/a.zip"}
    assert sorted(seen_drops) == ["alice/cars/a.zip-b.zip", "alice/cars/c.zip"]


def test_drop_and_its_part_file_stay_on_one_page(inbox: Path) -> None:
    project = inbox / "alice" / "cars"
    for name in ("a.zip", "a.zip.part", "b.zip"):
        write_file(project / name)
    first = scan_inbox(inbox, max_entries=1)
    assert paths(first.drops) == ["alice/cars/a.zip"] and first.part_files == {"alice/cars/a.zip"}
    assert first.next_page_after == "alice/cars/a.zip"
    second = scan_inbox(inbox, page_after=first.next_page_after, max_entries=1)
    assert paths(second.drops) == ["alice/cars/b.zip"] and second.part_files == set()


# --- place_in_inbox --------------------------------------------------------------------------------------


def test_place_zip(inbox: Path, tmp_path: Path) -> None:
    source = write_file(tmp_path / "src" / "trucks.zip", b"zip bytes")
    target = place_in_inbox(source, inbox, "alice", "cars")
    assert target == inbox / "alice" / "cars" / "trucks.zip"
    assert target.read_bytes() == b"zip bytes" and source.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["trucks.zip"]
    assert paths(scan_inbox(inbox).drops) == ["alice/cars/trucks.zip"]


def test_place_zip_under_another_name(inbox: Path, tmp_path: Path) -> None:
    source = write_file(tmp_path / "src" / "trucks.zip")
    target = place_in_inbox(source, inbox, "alice", "cars", name="lorries")
    assert target == inbox / "alice" / "cars" / "lorries.zip" and target.is_file()


def test_place_folder(inbox: Path, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "src" / "photos", {"images/a.jpg": b"a", "labels/a.txt": b"0 1 1 1 1"})
    target = place_in_inbox(source, inbox, "alice", "cars")
    assert target == inbox / "alice" / "cars" / "photos" and target.is_dir()
    assert (target / "images" / "a.jpg").read_bytes() == b"a"
    assert (target / "labels" / "a.txt").read_bytes() == b"0 1 1 1 1"
    assert sorted(p.name for p in target.parent.iterdir()) == ["photos"]
    [drop] = scan_inbox(inbox).drops
    assert (drop.kind, drop.name) == ("folder", "photos")


@pytest.mark.parametrize(
    ("user", "project", "name"),
    [
        ("bad name", "cars", None),
        ("alice", "..", None),
        ("alice", "cars", ".."),
        ("alice", "cars", "_rejected"),
        ("alice", "cars", "a" * 65),
        ("alice", "cars", "a/b"),
        ("_processing", "cars", None),
    ],
)
def test_place_refuses_bad_names(
    inbox: Path, tmp_path: Path, user: str, project: str, name: str | None
) -> None:
    source = write_file(tmp_path / "src" / "trucks.zip")
    with pytest.raises(InboxError, match="name"):
        place_in_inbox(source, inbox, user, project, name)
    assert list(inbox.iterdir()) == []


def test_place_refuses_missing_source(inbox: Path, tmp_path: Path) -> None:
    with pytest.raises(InboxError, match="no such file"):
        place_in_inbox(tmp_path / "missing.zip", inbox, "alice", "cars")


def test_place_refuses_symlink_source(inbox: Path, tmp_path: Path) -> None:
    real = write_file(tmp_path / "src" / "real.zip")
    link = tmp_path / "src" / "link.zip"
    link.symlink_to(real)
    with pytest.raises(InboxError, match="symlink"):
        place_in_inbox(link, inbox, "alice", "cars")
    assert list(inbox.iterdir()) == []


@pytest.mark.parametrize("name", ["trucks.tar.gz", "trucks.rar", "trucks"])
def test_place_refuses_non_zip_file(inbox: Path, tmp_path: Path, name: str) -> None:
    source = write_file(tmp_path / "src" / name)
    with pytest.raises(InboxError, match=r"\.zip file or a folder"):
        place_in_inbox(source, inbox, "alice", "cars")
    assert list(inbox.iterdir()) == []


@pytest.mark.parametrize("existing", ["trucks.zip", "trucks.zip.part"])
def test_place_refuses_an_existing_target(inbox: Path, tmp_path: Path, existing: str) -> None:
    source = write_file(tmp_path / "src" / "trucks.zip", b"new")
    already = write_file(inbox / "alice" / "cars" / existing, b"old")
    with pytest.raises(InboxError, match="already waiting"):
        place_in_inbox(source, inbox, "alice", "cars")
    assert already.read_bytes() == b"old"


def test_place_refuses_an_existing_folder_target(inbox: Path, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "src" / "photos", {"a.jpg": b"new"})
    make_folder(inbox / "alice" / "cars" / "photos", {"a.jpg": b"old"})
    with pytest.raises(InboxError, match="already waiting"):
        place_in_inbox(source, inbox, "alice", "cars")
    assert (inbox / "alice" / "cars" / "photos" / "a.jpg").read_bytes() == b"old"


def test_place_leaves_no_part_file_when_copy_fails(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_file(tmp_path / "src" / "trucks.zip")

    def failing_copy(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inbox_module.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="No space"):
        place_in_inbox(source, inbox, "alice", "cars")
    assert list((inbox / "alice" / "cars").iterdir()) == []


def test_place_leaves_no_part_folder_when_copy_fails(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_folder(tmp_path / "src" / "photos", {"a.jpg": b"a"})
    real_copytree = shutil.copytree

    def failing_copytree(src: Path, dst: Path, **kwargs: object) -> None:
        real_copytree(src, dst)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inbox_module.shutil, "copytree", failing_copytree)
    with pytest.raises(OSError, match="No space"):
        place_in_inbox(source, inbox, "alice", "cars")
    assert list((inbox / "alice" / "cars").iterdir()) == []
