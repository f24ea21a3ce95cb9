"""What a zygote-forked plugin worker copies (runs the real supervisor tree; needs root).

Starts ``sriov-supervisor run`` on a scaled simulated node (default 8 PFs x 64 VFs, one pool per
PF), waits until every pool is registered and the tree has settled, then compares one plugin
worker's writable anonymous pages with the zygote's, page by page, through
``/proc/<pid>/pagemap`` (physical frame numbers: root only) and ``/proc/<pid>/mem``:

- ``shared``: the same physical page as the zygote's (nothing copied);
- ``copied``: present in both at the same address, different frames: copy-on-write happened.
  Each copied page is compared word by word with the zygote's: ``identical`` (written and put
  back, e.g. a reference count raised and lowered again), ``1-3 words`` (a few counters, the
  usual reference-count write) or ``more``;
- ``own``: present in the worker only (its own allocations in fresh pages).

Every copied page is also counted under the type of each object written on it (the nearest
object header before each changed word; ``?`` for free blocks and allocator bookkeeping).

For the pages with 1-3 differing words, each differing word is classified by what it most likely
is: the reference count of an object whose type is readable right after it (``refcount <type>``),
a code object's warm-up counter (CPython 3.11 counts a function's first calls in the code object),
or ``other`` (allocator and dict bookkeeping, among others). The zygote keeps writing its own
pages too (each spawn), so ``copied`` counts pages either side wrote; the worker's
``Private_Dirty`` is printed beside them.

Prints a table; ``--json PATH`` writes the numbers. Method and results: docs/benchmarks.md,
"What a worker copies".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_supervisor import comm, descendants, rollup_kb, scaled_node

from sriovdp.shared.simnode.kubelet import KubeletStandIn

PAGE = 4096
WORDS = PAGE // 8
_PRESENT = 1 << 63
_PFN_MASK = (1 << 55) - 1


def writable_anon_maps(pid: int) -> list[tuple[int, int, str]]:
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(None, 5)
        name = fields[5].strip() if len(fields) > 5 else "[anon]"
        if "w" in fields[1] and name in ("[anon]", "[heap]"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end, name))
    return out


def frames(pid: int, start: int, end: int) -> tuple[int, ...]:
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        data = f.read((end - start) // PAGE * 8)
    return struct.unpack(f"{len(data) // 8}Q", data)


class Memory:
    """Reads another process's memory (``/proc/<pid>/mem``)."""

    def __init__(self, pid: int) -> None:
        self.f = open(f"/proc/{pid}/mem", "rb")  # noqa: SIM115 (closed by close())
        self.names: dict[int, str] = {}

    def read(self, addr: int, n: int) -> bytes:
        self.f.seek(addr)
        return self.f.read(n)

    def type_name(self, addr: int) -> str | None:
        """``tp_name`` of the type object at ``addr``, or None when it does not look like one."""
        if addr in self.names:
            return self.names[addr] or None
        name = ""
        try:
            ptr = struct.unpack("Q", self.read(addr + 24, 8))[0]  # PyTypeObject.tp_name
            raw = self.read(ptr, 64).split(b"\0")[0]
            if raw and raw.isascii() and all(32 < c < 127 for c in raw):
                name = raw.decode()
        except (OSError, ValueError, struct.error, OverflowError):
            pass
        self.names[addr] = name
        return name or None

    def close(self) -> None:
        self.f.close()


def _is_warmup(old: int, new: int) -> bool:
    """CPython 3.11's ``co_flags`` (32 bits) + ``co_warmup`` (a short counting up from -8 to the
    function's quickening) share one word of a code object; only the counter changes."""
    same_low = old & 0xFFFFFFFF == new & 0xFFFFFFFF
    counters = [(w >> 32) & 0xFFFF for w in (old, new)]
    return same_low and old >> 48 == new >> 48 and all(c >= 0xFFF0 or c == 0 for c in counters)


def classify(child_pid: int, zygote_pid: int) -> dict[str, Any]:
    zmem, cmem = Memory(zygote_pid), Memory(child_pid)
    pages: collections.Counter[str] = collections.Counter()
    light: collections.Counter[str] = collections.Counter()
    pending: list[tuple[int, int, int]] = []  # (old word, new word, next old word) per change
    owners: collections.Counter[str] = collections.Counter()  # pages per type of object written
    zygote_maps = writable_anon_maps(zygote_pid)
    zygote_frames = {(s, e): frames(zygote_pid, s, e) for s, e, _ in zygote_maps}

    def zygote_entry(addr: int) -> int:
        for (s, e), entries in zygote_frames.items():
            if s <= addr < e:
                return entries[(addr - s) // PAGE]
        return 0

    try:
        for start, end, _name in writable_anon_maps(child_pid):
            for i, entry in enumerate(frames(child_pid, start, end)):
                if not entry & _PRESENT:
                    continue
                addr = start + i * PAGE
                zentry = zygote_entry(addr)
                if not zentry & _PRESENT:
                    pages["own"] += 1
                    continue
                if entry & _PFN_MASK == zentry & _PFN_MASK:
                    pages["shared"] += 1
                    continue
                try:
                    new = struct.unpack(f"{WORDS}Q", cmem.read(addr, PAGE))
                    old = struct.unpack(f"{WORDS}Q", zmem.read(addr, PAGE))
                except (OSError, struct.error):
                    pages["copied, unreadable"] += 1
                    continue
                changed = [j for j in range(WORDS) if new[j] != old[j]]
                for owner in {_owner(zmem, old, j) for j in changed}:
                    owners[owner] += 1
                if not changed:
                    pages["copied, identical"] += 1
                elif len(changed) <= 3:
                    pages["copied, 1-3 words"] += 1
                    for j in changed:
                        nxt = old[j + 1] if j + 1 < WORDS else 0
                        pending.append((old[j], new[j], nxt))
                else:
                    pages["copied, more"] += 1
        for old_word, new_word, nxt in pending:
            if _is_warmup(old_word, new_word):
                light["code warm-up counter"] += 1
            elif old_word < 1 << 32 and new_word < 1 << 32 and zmem.type_name(nxt):
                light[f"refcount {zmem.type_name(nxt)}"] += 1
            else:
                light["other"] += 1
    finally:
        zmem.close()
        cmem.close()
    return {
        "pages_kb": {k: v * 4 for k, v in pages.items()},
        "light_words": dict(light),
        "pages_by_owner": dict(owners),
    }


def _owner(mem: Memory, words: tuple[int, ...], j: int) -> str:
    """The type of the object word ``j`` of a page belongs to: the nearest object header at or
    before it (a reference count below 2**32 followed by a pointer to a readable type object),
    at most 80 words back; ``?`` when there is none (free blocks, allocator bookkeeping, the
    middle of a large object)."""
    for k in range(j, max(-1, j - 80), -1):
        if k + 1 < WORDS and 0 < words[k] < 1 << 32 and words[k + 1] > 1 << 40:
            name = mem.type_name(words[k + 1])
            if name:
                return name
    return "?"


def run(pfs: int, vfs: int, settle_s: float) -> dict[str, Any]:
    base, argv = scaled_node("bench-cow-", "zygote", pfs, vfs)
    kubelet = KubeletStandIn(base / "plugins")
    log = (base / "supervisor.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=base)
    try:
        if not kubelet.wait_for(lambda k: len(k.allocatable()) == pfs, 60):
            raise RuntimeError(f"pools never registered: {kubelet.allocatable()}")
        time.sleep(settle_s)
        tree = {p: comm(p) for p in descendants(proc.pid)}
        zygote = next(p for p, name in tree.items() if name == "sdp-zygote")
        workers = sorted(p for p, name in tree.items() if name.startswith("sdp-") and p != zygote)
        plugin = next(p for p in workers if not tree[p].startswith(("sdp-health", "sdp-kubelet")))
        result = classify(plugin, zygote)
        result["worker_private_dirty_kb"] = rollup_kb(plugin, "Private_Dirty")
        result["pools"], result["vfs_per_pool"] = pfs, vfs
    finally:
        proc.terminate()
        proc.wait(30)
        kubelet.stop()
        log.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--vfs", type=int, default=64)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after registration")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_cow.py needs root: /proc/<pid>/pagemap hides frame numbers from other users")
        return 2
    result = run(args.pools, args.vfs, args.settle)
    print(f"one plugin worker of {args.pools} pools x {args.vfs} VFs, against the zygote")
    print(f"  Private_Dirty {result['worker_private_dirty_kb']} kB")
    for kind, kb in sorted(result["pages_kb"].items()):
        print(f"  {kind:22} {kb:7} kB")
    print("  copied pages by the type of object written on them (a page may count twice):")
    for kind, n in sorted(result["pages_by_owner"].items(), key=lambda kv: -kv[1])[:10]:
        print(f"    {kind:30} {n:6}")
    print("  words changed on the 1-3-word pages:")
    for kind, n in sorted(result["light_words"].items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {kind:30} {n:6}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
