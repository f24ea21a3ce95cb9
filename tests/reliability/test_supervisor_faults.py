"""A real supervisor with real workers: garbage on its bus and control sockets, permissions of
its run dir, a second user on the control socket, path-escaping names, and ``run`` on every
invalid config of the corpus."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from sriovdp.shared.bus import RunDir
from sriovdp.shared.config import ConfigError, parse_config
from sriovdp.supervisor.client import ControlClient
from tests.integration.conftest import REPO, SimNode, resource
from tests.reliability.procs import settle

pytestmark = pytest.mark.timeout(90)

BAD = REPO / "tests" / "configs" / "bad"


@pytest.fixture
def node() -> Iterator[SimNode]:
    n = SimNode(2, 2)
    try:
        n.start_supervisor()
        assert n.stand_in().wait_for(n.all_registered(), 60), n.log_text()
        assert settle(lambda: all(r["state"] == "RUNNING" for r in n.rows().values()), 30)
        yield n
    finally:
        n.close()


def status(node: SimNode) -> dict[str, object]:
    with ControlClient(node.run_dir, timeout=10.0) as client:
        result: dict[str, object] = client.request("status")
    return result


def counters(node: SimNode) -> tuple[int, int]:
    sup = status(node)["supervisor"]
    assert isinstance(sup, dict)
    return int(sup["bus"]["dropped"]), int(sup["control"]["dropped"])


def garbage(rng: random.Random) -> list[list[bytes]]:
    """Multipart messages that must all be refused: random bytes, truncated msgpack, a huge
    frame, wrong types, wrong frame counts."""
    envelope = {"v": 1, "kind": "worker.hb", "src": "x", "seq": 1, "ts": 1.0}
    good_body = {"name": "intel-com_pool0", "pid": 1}
    packed = msgpack.packb({**envelope, "body": good_body})
    return [
        [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))] for _ in range(10)
    ] + [
        [b"worker.intel-com_pool0.hb", packed[: len(packed) // 2]],  # truncated msgpack
        [b"worker.intel-com_pool0.hb", b"\xc1"],  # never-used msgpack byte
        [b"worker.intel-com_pool0.hb", b"\x00" * (2 << 20)],  # 2 MiB frame
        [b"worker.intel-com_pool0.hb", msgpack.packb({**envelope, "body": {"name": 5}})],
        [b"worker.intel-com_pool0.hb", msgpack.packb({**envelope, "seq": "x", "body": good_body})],
        [b"worker.other.hb", packed],  # topic does not match the body
        [b"link.x.state", msgpack.packb([1, 2, 3])],
        [b"\xff\xfe", packed],  # topic not ASCII
        [b"a", b"b", b"c"],
        [b""],
    ]


def test_garbage_on_bus_and_control_is_dropped_and_counted(node: SimNode) -> None:
    before_pids = {n: r["pid"] for n, r in node.rows().items()}
    bus_before, control_before = counters(node)
    rd = RunDir(node.run_dir)
    msgs = garbage(random.Random(8))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        dealer = ctx.socket(zmq.DEALER)
        xsub = ctx.socket(zmq.XSUB)
        for sock, path in ((push, rd.bus_in), (dealer, rd.control), (xsub, rd.bus_out)):
            sock.setsockopt(zmq.LINGER, 2000)
            sock.connect(RunDir.endpoint(path))
        for frames in msgs:
            push.send_multipart(frames)
            dealer.send_multipart(frames)
        # subscription frames: garbage commands, a big one, an empty one (a subscription of
        # 1 MB or more crashes the *sending* libzmq, pyzmq 27, at ctx.term: kept under that)
        for frame in (b"\x07junk", b"\x01" + b"z" * 100_000, b"", b"\x02"):
            xsub.send(frame)
        for sock in (push, dealer, xsub):
            sock.close()
    finally:
        ctx.term()
    assert settle(lambda: counters(node)[0] >= bus_before + len(msgs) - 2, 15), counters(node)
    bus_after, control_after = counters(node)
    print(f"\nbus dropped +{bus_after - bus_before}, control +{control_after - control_before}")
    assert control_after > control_before
    assert {n: r["pid"] for n, r in node.rows().items()} == before_pids
    assert all(r["state"] == "RUNNING" for r in node.rows().values())
    k = node.stand_in()
    vf = sorted(node.vfs(0))[0]
    assert k.allocate(resource(0), [vf]).envs
    assert k.wait_for(node.all_registered(), 30)


def test_run_dir_and_sockets_are_private(node: SimNode) -> None:
    rd = RunDir(node.run_dir)
    st = os.stat(node.run_dir)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    for path in (rd.bus_in, rd.bus_out, rd.control, rd.lock):
        pst = os.lstat(path)
        assert pst.st_uid == os.geteuid(), path
        assert stat.S_IMODE(pst.st_mode) & 0o077 == 0, (path, oct(pst.st_mode))


_NOBODY_PROBE = textwrap.dedent(
    """
    import json, os, socket, sys
    import msgpack, zmq
    from sriovdp.shared.bus import RunDir
    run_dir = sys.argv[1]
    # imported as root (the interpreter lives under /root), then drop to nobody
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    out = {"uid": str(os.getuid())}
    try:
        try:
            out["listdir"] = "allowed: " + ",".join(os.listdir(run_dir))
        except OSError as exc:
            out["listdir"] = f"refused: {exc!r}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.path.join(run_dir, "control.sock"))
            out["connect"] = "connected"
        except OSError as exc:
            out["connect"] = f"refused: {exc!r}"
        finally:
            sock.close()
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(RunDir.endpoint(os.path.join(run_dir, "control.sock")))
        dealer.send(msgpack.packb({"v": 1, "id": 1, "cmd": "status", "args": {}}))
        out["zmq"] = "answered" if dealer.poll(1000) else "no answer"
        dealer.close()
        ctx.term()
    except BaseException as exc:
        out["error"] = repr(exc)
    print(json.dumps(out))
    """
)


def _as_nobody(run_dir: Path) -> dict[str, str]:
    """Runs a fresh interpreter that drops to uid/gid 65534 and tries the run dir and
    control.sock three ways: list the dir, connect() a unix socket, a ZeroMQ DEALER asking status.
    (A fresh process, not a bare fork: the test process may have grpc threads running.)"""
    proc = subprocess.run(
        [sys.executable, "-c", _NOBODY_PROBE, str(run_dir)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def test_another_user_cannot_drive_the_control_socket(node: SimNode) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as uid 65534")
    # open the way down to the run dir, so that only the run dir's own mode protects it
    os.chmod(node.base, 0o755)
    out = _as_nobody(node.run_dir)
    print(f"\nas uid 65534: {out}")
    assert "error" not in out, out
    assert out["uid"] == "65534"
    assert out["listdir"].startswith("refused") and "Permission" in out["listdir"], out
    assert out["connect"].startswith("refused") and "Permission" in out["connect"], out
    assert out["zmq"] == "no answer", out
    assert all(r["state"] == "RUNNING" for r in node.rows().values())  # root still can


@pytest.mark.parametrize(
    ("entry", "default_prefix"),
    [
        ({"resourceName": ".."}, "intel.com"),
        ({"resourceName": "../../etc"}, "intel.com"),
        ({"resourceName": "a/b"}, "intel.com"),
        ({"resourceName": "x\u0000y"}, "intel.com"),
        ({"resourceName": "net", "resourcePrefix": "../evil"}, "intel.com"),
        ({"resourceName": "net", "resourcePrefix": "a.com/../../b"}, "intel.com"),
        ({"resourceName": "net", "resourcePrefix": "/abs"}, "intel.com"),
        ({"resourceName": "net"}, "../../evil"),
        ({"resourceName": "net"}, "intel.com/.."),
    ],
)
def test_names_that_would_escape_a_directory_are_refused(
    entry: dict[str, str], default_prefix: str
) -> None:
    doc = {"resourceList": [{**entry, "selectors": {"drivers": ["iavf"]}}]}
    with pytest.raises(ConfigError):
        parse_config(json.dumps(doc), "c.json", default_prefix)


def test_run_exits_2_on_every_invalid_corpus_config(tmp_path: Path) -> None:
    """The real ``sriov-supervisor run`` (click, then the exec'd supervisor) on each bad config,
    one process per file: exit 2, the file named on stderr, nothing started."""
    files = sorted(str(p) for p in BAD.glob("*.json") if p.name != "expected.json")
    assert len(files) >= 30
    codes = {}
    for i, path in enumerate(files):
        dirs = ["--run-dir", str(tmp_path / f"run{i}"), "--plugin-dir", str(tmp_path / "plugins")]
        r = subprocess.run(
            [sys.executable, "-m", "sriovdp", "run", "--config-file", path, *dirs],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO,
            check=False,
        )
        codes[path] = (r.returncode, path in r.stderr, "Traceback" in r.stderr)
    assert {p: c for p, c in codes.items() if c != (2, True, False)} == {}
    assert not list(tmp_path.glob("run*"))  # nothing started, no run dir made
