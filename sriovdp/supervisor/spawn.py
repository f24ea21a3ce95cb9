"""How children start, and how their ends are learnt (supervisor process).

Two fork-safe ways (ARCHITECTURE §2); the supervisor has live zmq state, so it never forks bare:

- :class:`ExecSpawner`: ``os.posix_spawn`` of ``python -m sriovdp.launch.child <pid> <entry>
  <argv>`` per child: a fresh interpreter that arms PR_SET_PDEATHSIG and runs the role.
- :class:`ZygoteSpawner`: one ``posix_spawn`` of the zygote (``sriovdp.launch.zygote``), which
  has grpc, protobuf, zmq and the worker modules imported and forks workers on request, each
  through an intermediate that exits at once: the worker is re-parented to the supervisor (a
  child subreaper), so it outlives a zygote that dies.

Either way every child is the supervisor's, reaped by its ``waitpid(-1, WNOHANG)`` loop
(:func:`reap`), and a lost zygote costs nothing but a new one at the next spawn. Children start in a
process group of their own, so a Ctrl-C on the supervisor's terminal reaches the supervisor only; it
stops them in order.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgpack

from sriovdp.supervisor.child import ChildSpec, describe_exit

log = logging.getLogger(__name__)

CHILD_ENTRY = "sriovdp.launch.child"


class SpawnError(RuntimeError):
    """A child could not be started; the arbiter backs off and tries again.

    ``maybe_started``: the zygote died with the request in hand, so a worker may have been
    forked all the same (its pid was never reported).
    """

    def __init__(self, message: str, maybe_started: bool = False) -> None:
        super().__init__(message)
        self.maybe_started = maybe_started


class Spawner(Protocol):
    """What the arbiter needs from a way of starting children."""

    mode: str
    starts: int  # how often the helper process (the zygote) was started

    def spawn(self, spec: ChildSpec) -> int:
        """Starts one child; returns its pid or raises SpawnError."""
        ...

    def fileno(self) -> int | None:
        """A descriptor to poll for reports, or None when there is none."""
        ...

    def drain(self) -> None:
        """Reads what the helper wrote to :meth:`fileno` outside a spawn (only its end, today)."""
        ...

    def reaped(self, pid: int, status: int) -> bool:
        """The supervisor reaped ``pid``; True when it was the spawner's own helper."""
        ...

    def close(self) -> None:
        """Asks any helper process to exit (children already gone); :func:`reap` reaps it."""
        ...

    def helper_pid(self) -> int | None:
        """The helper process (the zygote) while it runs, else None."""
        ...

    def kill_helper(self) -> None:
        """SIGKILL to the helper process, when it does not exit by itself."""
        ...


def reap(waitpid: Callable[[int, int], tuple[int, int]] = os.waitpid) -> list[tuple[int, int]]:
    """Reaps every child of this process that has ended: the one reaping mechanism here."""
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, status))


def _spawn_process(
    argv: list[str], pass_fds: tuple[int, ...] = (), env: Mapping[str, str] | None = None
) -> int:
    """posix_spawn with stdin from /dev/null, an empty signal mask and a new process group."""
    file_actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            os.environ if env is None else env,
            file_actions=file_actions,
            setpgroup=0,
            setsigmask=(),
            setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD),
        )
    except OSError as exc:
        raise SpawnError(f"posix_spawn {argv[0]}: {exc}") from exc
    finally:
        for fd in pass_fds:
            os.set_inheritable(fd, False)


class ExecSpawner:
    """A fresh interpreter per child (fork+exec through posix_spawn)."""

    mode = "exec"
    starts = 0  # no helper process

    def __init__(self, python: str = sys.executable) -> None:
        self._python = python

    def spawn(self, spec: ChildSpec) -> int:
        argv = [self._python, "-m", CHILD_ENTRY, str(os.getpid()), spec.entry]
        return _spawn_process([*argv, *spec.argv])

    def fileno(self) -> int | None:
        return None

    def drain(self) -> None:
        return None

    def reaped(self, pid: int, status: int) -> bool:
        return False

    def close(self) -> None:
        return None

    def helper_pid(self) -> int | None:
        return None

    def kill_helper(self) -> None:
        return None


class ZygoteSpawner:
    """Workers forked by a preloaded zygote; started lazily, restarted when it dies."""

    mode = "zygote"

    def __init__(self, python: str = sys.executable, reply_timeout: float = 10.0) -> None:
        self._python = python
        self._reply_timeout = reply_timeout
        self.pid: int | None = None
        self._req_w: int | None = None
        self._rep_r: int | None = None
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self._next_id = 0
        self.starts = 0

    # the zygote process itself

    def start(self) -> None:
        """Starts the zygote if it is not running (it preloads while the supervisor goes on)."""
        if self.pid is not None:
            return
        req_r, req_w = os.pipe2(os.O_CLOEXEC)
        rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        argv = [self._python, "-m", "sriovdp.workers", "zygote", "--parent", str(os.getpid())]
        argv += ["--requests", str(req_r), "--reports", str(rep_w)]
        try:
            self.pid = _spawn_process(argv, (req_r, rep_w), os.environ)
        except SpawnError:
            for fd in (req_r, req_w, rep_r, rep_w):
                os.close(fd)
            raise
        os.close(req_r)
        os.close(rep_w)
        self._req_w, self._rep_r = req_w, rep_r
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        self.starts += 1
        log.info("zygote started, pid %d", self.pid)

    def _lost(self, why: str) -> None:
        if self.pid is None:
            return
        if self._req_w is None:  # we closed its pipe: an orderly end
            log.info("zygote pid %d ended: %s", self.pid, why)
        else:
            log.warning("zygote pid %d lost: %s", self.pid, why)
        self.drain()
        for fd in (self._req_w, self._rep_r):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._req_w = self._rep_r = None
        self.pid = None

    # reports

    def drain(self) -> None:
        """Reads every report waiting in the pipe without blocking."""
        if self._rep_r is None:
            return
        while select.select([self._rep_r], [], [], 0)[0]:
            try:
                data = os.read(self._rep_r, 65536)
            except OSError:
                data = b""
            if not data:
                self._lost_eof()
                return
            self._unpacker.feed(data)
            for frame in self._unpacker:
                self._note(frame)

    def _lost_eof(self) -> None:
        fd, self._rep_r = self._rep_r, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    @staticmethod
    def _note(frame: object) -> dict[str, Any] | None:
        """A reply frame, or None for anything else (the zygote sends nothing else)."""
        return frame if isinstance(frame, dict) else None

    def fileno(self) -> int | None:
        return self._rep_r

    def reaped(self, pid: int, status: int) -> bool:
        if pid != self.pid:
            return False
        self._lost(describe_exit(status))
        return True

    # requests

    def spawn(self, spec: ChildSpec) -> int:
        if self.pid is not None and self._rep_r is None:  # it closed its pipe: start a new one
            self._kill_zygote()
            self._lost("report pipe closed")
        self.start()
        assert self._req_w is not None
        self._next_id += 1
        rid = self._next_id
        request = {"op": "spawn", "id": rid, "name": spec.name, "entry": spec.entry}
        request["argv"] = list(spec.argv)
        try:
            os.write(self._req_w, msgpack.packb(request, use_bin_type=True))
        except OSError as exc:
            self._lost(f"request pipe: {exc}")
            raise SpawnError(f"zygote unreachable: {exc}") from exc
        return self._await_reply(rid)

    def _await_reply(self, rid: int) -> int:
        deadline = time.monotonic() + self._reply_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._rep_r is None:
                self._kill_zygote()
                raise SpawnError("zygote did not answer", maybe_started=True)
            if not select.select([self._rep_r], [], [], left)[0]:
                continue
            try:
                data = os.read(self._rep_r, 65536)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                data = b""
            if not data:
                self._lost_eof()
                raise SpawnError("zygote closed its report pipe", maybe_started=True)
            self._unpacker.feed(data)
            answer: dict[str, Any] | None = None
            for frame in self._unpacker:
                reply = self._note(frame)
                if reply is not None and reply.get("id") == rid:
                    answer = reply
            if answer is None:
                continue
            if answer.get("op") == "spawned" and isinstance(answer.get("pid"), int):
                pid: int = answer["pid"]
                return pid
            raise SpawnError(f"zygote: {answer.get('error', 'refused')}")

    def _kill_zygote(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Closes the request pipe: the zygote exits on EOF; :func:`reap` collects it."""
        if self._req_w is not None:
            with contextlib.suppress(OSError):
                os.close(self._req_w)
            self._req_w = None

    def helper_pid(self) -> int | None:
        return self.pid

    def kill_helper(self) -> None:
        self._kill_zygote()


def make_spawner(mode: str) -> Spawner:
    if mode == "exec":
        return ExecSpawner()
    if mode == "zygote":
        return ZygoteSpawner()
    raise ValueError(f"unknown spawn mode {mode!r}")
