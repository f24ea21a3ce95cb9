"""The ctypes inotify wrapper against the real kernel, on temporary directories."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from sriovdp.shared import inotify
from sriovdp.shared.inotify import Event, Inotify, decode_events

pytestmark = pytest.mark.timeout(30)

MASK = (
    inotify.IN_CREATE
    | inotify.IN_DELETE
    | inotify.IN_MOVED_FROM
    | inotify.IN_MOVED_TO
    | inotify.IN_DELETE_SELF
)


@pytest.fixture
def ino() -> Iterator[Inotify]:
    with Inotify() as instance:
        yield instance


def _kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.describe().split()[1], e.name) for e in events]


def test_create_move_delete_are_reported_in_order(ino: Inotify, tmp_path: Path) -> None:
    wd = ino.add_watch(tmp_path, MASK)
    assert ino.read() == []
    (tmp_path / "a").write_text("x")
    os.rename(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b").unlink()
    (tmp_path / "d").mkdir()
    events = ino.read()
    assert all(e.wd == wd for e in events)
    assert _kinds(events) == [
        ("CREATE", "a"),
        ("MOVED_FROM", "a"),
        ("MOVED_TO", "b"),
        ("DELETE", "b"),
        ("CREATE|ISDIR", "d"),
    ]
    assert events[1].cookie == events[2].cookie != 0


def test_removing_the_watched_directory_reports_delete_self_then_ignored(
    ino: Inotify, tmp_path: Path
) -> None:
    watched = tmp_path / "plugins"
    watched.mkdir()
    wd = ino.add_watch(watched, MASK)
    watched.rmdir()
    events = ino.read()
    assert [e.mask & (inotify.IN_DELETE_SELF | inotify.IN_IGNORED) for e in events] == [
        inotify.IN_DELETE_SELF,
        inotify.IN_IGNORED,
    ]
    assert all(e.wd == wd for e in events)
    ino.rm_watch(wd)  # already dropped by the kernel: not an error


def test_watching_a_missing_path_raises_enoent(ino: Inotify, tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        ino.add_watch(tmp_path / "missing", MASK)
    assert info.value.errno == errno.ENOENT


def test_only_dir_refuses_a_file(ino: Inotify, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(OSError) as info:
        ino.add_watch(tmp_path / "f", MASK | inotify.IN_ONLYDIR)
    assert info.value.errno == errno.ENOTDIR


def test_closed_instance_refuses_use(tmp_path: Path) -> None:
    instance = Inotify()
    fd = instance.fileno()
    instance.close()
    with pytest.raises(OSError):
        instance.fileno()
    with pytest.raises(OSError):
        os.fstat(fd)  # the descriptor was really closed


def test_decode_events_handles_padding_and_several_events() -> None:
    def raw(wd: int, mask: int, cookie: int, name: bytes, pad: int) -> bytes:
        body = name + b"\0" * pad
        return struct.pack("iIII", wd, mask, cookie, len(body)) + body

    data = raw(1, inotify.IN_CREATE, 0, b"kubelet.sock", 4) + raw(2, inotify.IN_IGNORED, 0, b"", 0)
    assert decode_events(data) == [
        Event(1, inotify.IN_CREATE, 0, "kubelet.sock"),
        Event(2, inotify.IN_IGNORED, 0, ""),
    ]
