"""Process-tree, fd and socket inspection through /proc (test process; Linux only)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(") ", 1)[1].split()


def alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] == "Z"


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (children, grandchildren, ...), zombies included."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    out: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - out
        out |= frontier
    return out


def describe(pids: set[int]) -> list[str]:
    """``pid ppid state name`` of each process, for assertion messages."""
    out = []
    for pid in sorted(pids):
        fields = _stat_fields(pid)
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        where = f"{fields[1]} {fields[0]}" if fields else "gone"
        out.append(f"{pid} {where} {name}")
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def unix_sockets_in(directory: Path) -> set[str]:
    out = set()
    for entry in os.scandir(directory):
        try:
            if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                out.add(entry.name)
        except FileNotFoundError:
            pass
    return out


def settle(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """Polls ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
