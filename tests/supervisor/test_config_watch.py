"""The config watch (supervisor): a ConfigMap-style symlink swap and in-place edits are seen,
debounced, and reported once per new content; a real supervisor applies, refuses and ignores."""

from __future__ import annotations

import json
import os
import select
from pathlib import Path

from sriovdp.supervisor.config_watch import ConfigWatch
from tests.integration.test_supervisor_lifecycle import Supervisor, pool_config, wait_until


class ConfigMapDir:
    """The layout the kubelet gives a mounted ConfigMap: config.json -> ..data/config.json,
    ..data -> ..<version>; an update is a new version dir and an atomic rename of ..data."""

    def __init__(self, root: Path, text: str) -> None:
        self.root = root
        self.version = 0
        root.mkdir(parents=True, exist_ok=True)
        self.swap(text)
        (root / "config.json").symlink_to("..data/config.json")

    @property
    def path(self) -> Path:
        return self.root / "config.json"

    def swap(self, text: str) -> None:
        self.version += 1
        version = self.root / f"..2026_12_03_{self.version:02d}"
        version.mkdir()
        (version / "config.json").write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, self.root / "..data")


def _settle(watch: ConfigWatch, now: list[float]) -> bool:
    fd = watch.fileno()
    assert fd is not None
    select.select([fd], [], [], 5)
    watch.on_readable()
    now[0] += 1.0
    return watch.changed()


def test_symlink_swaps_and_edits_are_seen_once_per_content(tmp_path: Path) -> None:
    cm = ConfigMapDir(tmp_path / "cm", '{"resourceList": []}')
    now = [0.0]
    watch = ConfigWatch(cm.path, debounce=0.5, clock=lambda: now[0])
    watch.open()
    try:
        assert watch.changed() is False  # nothing happened yet
        cm.swap('{"resourceList": [ ]}\n')
        assert _settle(watch, now) is True
        assert watch.changed() is False  # reported once
        cm.swap('{"resourceList": [ ]}\n')  # same bytes again: events, no change
        assert _settle(watch, now) is False
        # an editor writing in place through the symlink
        (cm.root / "..data" / "config.json").write_text('{"resourceList": [1]}')
        assert _settle(watch, now) is True
    finally:
        watch.close()


def test_events_wait_for_the_settle_time(tmp_path: Path) -> None:
    cm = ConfigMapDir(tmp_path / "cm", "{}")
    now = [0.0]
    watch = ConfigWatch(cm.path, debounce=0.5, clock=lambda: now[0])
    watch.open()
    try:
        cm.swap("{ }")
        fd = watch.fileno()
        assert fd is not None
        select.select([fd], [], [], 5)
        watch.on_readable()
        assert watch.deadline() == 0.5
        now[0] = 0.4
        assert watch.changed() is False
        now[0] = 0.6
        assert watch.changed() is True
        assert watch.deadline() is None
    finally:
        watch.close()


def test_a_supervisor_applies_refuses_and_ignores_configmap_updates(tmp_path: Path) -> None:
    cm = ConfigMapDir(tmp_path / "cm", pool_config("a"))
    sup = Supervisor(
        tmp_path, pools=("a",), args=("--config-file", str(cm.path)), watch_config=True
    )
    try:
        _apply_refuse_ignore(sup, cm)
    finally:
        if sup.proc.poll() is None:
            sup.proc.kill()
            sup.proc.wait()


def _apply_refuse_ignore(sup: Supervisor, cm: ConfigMapDir) -> None:
    rows = sup.wait_running()
    assert set(rows) >= {"intel-com_a"}

    cm.swap(pool_config("a", "b"))
    wait_until(lambda: "intel-com_b" in sup.rows(), what="pool b started by the watch")
    rows = sup.wait_running()
    head = sup.status()["supervisor"]
    assert head["generation"] == 2 and head["last_reload_error"] is None

    cm.swap('{"resourceList": [')  # a broken update: refused, nothing changes
    wait_until(lambda: sup.status()["supervisor"]["last_reload_error"] is not None)
    assert sup.status()["supervisor"]["generation"] == 2
    assert {n: r["pid"] for n, r in sup.rows().items()} == {n: r["pid"] for n, r in rows.items()}

    # the same pools, written differently: nothing restarts, the generation stays
    cm.swap(json.dumps(json.loads(pool_config("a", "b")), indent=4))
    wait_until(lambda: sup.status()["supervisor"]["last_reload_error"] is None)
    assert sup.status()["supervisor"]["generation"] == 2
    assert {n: r["pid"] for n, r in sup.rows().items()} == {n: r["pid"] for n, r in rows.items()}
    assert sup.stop() == 0
