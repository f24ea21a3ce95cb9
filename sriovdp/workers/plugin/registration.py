"""Registration with the kubelet, retried until it succeeds (plugin worker process).

:class:`Registrar` owns one thread. :meth:`Registrar.want` names the socket to register (after
every fresh start of the server); :meth:`Registrar.kick` asks for an immediate retry (kubelet.sock
appeared or changed). Attempts dial ``<plugin-dir>/kubelet.sock`` only when it exists; failures are
retried with capped exponential backoff and jitter, logged when the reason changes, and never end
the process. Registering is idempotent: a kick while registered on the current kubelet socket
(same inode) and endpoint does nothing.

Each attempt is one :func:`~sriovdp.workers.grpcwire.client.unary_call` (pure-Python gRPC over
``h2``, a fresh connection closed after the call) run on an asyncio loop private to the
``register`` thread. Not the serving loop: a Register blocks for as long as the kubelet takes to
dial back our socket (up to 10 s), and the thread's plain condition wait between attempts keeps
the backoff and the ``want``/``kick`` logic synchronous and simple. The loop only runs during an
attempt; :meth:`Registrar.want` abandons an attempt in flight by cancelling its task from any
thread (``call_soon_threadsafe``), which resets the stream and closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sriovdp.proto import api_pb2
from sriovdp.workers.grpcwire.client import unary_call
from sriovdp.workers.grpcwire.status import RpcError
from sriovdp.workers.plugin.servicer import OPTIONS

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
REGISTER_METHOD = "/v1beta1.Registration/Register"
#: the kubelet dials back within Register for up to 10 s
REGISTER_TIMEOUT_S = 12.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with +-25 % jitter."""

    first: float = 0.05
    cap: float = 5.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        base = min(self.cap, self.first * self.factor ** max(0, failures - 1))
        return float(base * random.uniform(0.75, 1.25))


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    registered: bool
    endpoint: str | None
    attempts: int
    reason: str


def kubelet_inode(plugin_dir: Path) -> int | None:
    """The inode of ``kubelet.sock`` when it exists and is a socket."""
    try:
        st = os.stat(plugin_dir / KUBELET_SOCKET)
    except OSError:
        return None
    return st.st_ino if stat.S_ISSOCK(st.st_mode) else None


class Registrar:
    """Registers ``resource`` on the kubelet, in a thread of its own."""

    def __init__(
        self,
        plugin_dir: Path,
        resource: str,
        on_change: Callable[[RegistrationStatus], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.plugin_dir = plugin_dir
        self.resource = resource
        self._on_change = on_change
        self._backoff = backoff or Backoff()
        self._cond = threading.Condition()
        self._stopped = False
        self._target: str | None = None
        self._pending = False
        self._failures = 0
        self._attempts = 0
        self._last_reason = ""
        self._retry_at: float | None = None
        self.registered_endpoint: str | None = None
        self.registered_inode: int | None = None
        self.first_attempt_done = threading.Event()
        #: the Register call in flight and its endpoint; want() cancels it when the target moves
        self._inflight: tuple[str, asyncio.Task[api_pb2.Empty]] | None = None
        #: the register thread's loop (exists while the thread runs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="register", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def registered(self) -> bool:
        return self.registered_endpoint is not None and self.registered_endpoint == self._target

    @property
    def pending(self) -> bool:
        return self._pending

    def want(self, endpoint: str) -> None:
        """Registers ``endpoint`` (a fresh socket name) as soon as possible."""
        with self._cond:
            self._target = endpoint
            self.registered_endpoint = None
            self._pending = True
            self._failures = 0
            self._retry_at = None
            inflight, self._inflight = self._inflight, None
            self._cond.notify_all()
        if inflight is not None and inflight[0] != endpoint:
            # the kubelet would dial the old socket back for up to 10 s before refusing
            self._cancel(inflight[1])

    def _cancel(self, task: asyncio.Task[api_pb2.Empty]) -> None:
        """Cancels an attempt from any thread (the loop may be gone: then so is the attempt)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    def kick(self, force: bool = False) -> bool:
        """Retries now unless registered on the current kubelet.sock; returns whether it will.

        ``force`` re-registers even when the inode looks unchanged: file systems reuse a freed
        inode number at once, so after a kubelet restart the new ``kubelet.sock`` often has the
        old number; the kubelet watcher's generation is the reliable signal.
        """
        inode = kubelet_inode(self.plugin_dir)
        with self._cond:
            if self._target is None:
                return False
            if (
                not force
                and self.registered
                and inode is not None
                and inode == self.registered_inode
            ):
                return False
            self.registered_endpoint = None
            self._pending = True
            self._failures = 0
            self._retry_at = None
            self._cond.notify_all()
            return True

    def forget(self, reason: str) -> None:
        """The kubelet went away: we are no longer registered (a later kick registers again)."""
        with self._cond:
            was = self.registered
            self.registered_endpoint = None
            self.registered_inode = None
        if was:
            self._report(False, reason)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            inflight, self._inflight = self._inflight, None
            self._cond.notify_all()
        if inflight is not None:
            self._cancel(inflight[1])

    def _report(self, registered: bool, reason: str) -> None:
        self._on_change(
            RegistrationStatus(
                registered, self._target if registered else None, self._attempts, reason
            )
        )

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._serve(loop)
        finally:
            self._loop = None
            loop.close()

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._pending:
                        now = time.monotonic()
                        if self._retry_at is None or now >= self._retry_at:
                            break
                        self._cond.wait(self._retry_at - now)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                target = self._target
            assert target is not None
            ok, reason, inode = self._attempt(loop, target)
            delay = 0.0
            with self._cond:
                self._attempts += 1
                current = target == self._target
                if ok and current:
                    self._pending = False
                    self._failures = 0
                    self._retry_at = None
                    self.registered_endpoint = target
                    self.registered_inode = inode
                elif not ok and current:
                    self._failures += 1
                    delay = self._backoff.delay(self._failures)
                    self._retry_at = time.monotonic() + delay
            if ok and current:
                log.info(
                    "registered %s on kubelet as %s (attempt %d)",
                    self.resource,
                    target,
                    self._attempts,
                )
                self._last_reason = ""
                self._report(True, "registered")
            elif not ok:
                level = logging.WARNING if reason != self._last_reason else logging.DEBUG
                log.log(
                    level, "register %s failed: %s; retrying in %.2fs", self.resource, reason, delay
                )
                self._last_reason = reason
                if not self.first_attempt_done.is_set():
                    self._report(False, reason)
            self.first_attempt_done.set()

    def _attempt(
        self, loop: asyncio.AbstractEventLoop, endpoint: str
    ) -> tuple[bool, str, int | None]:
        inode = kubelet_inode(self.plugin_dir)
        if inode is None:
            return False, f"{self.plugin_dir / KUBELET_SOCKET} absent", None
        request = api_pb2.RegisterRequest(
            version=API_VERSION, endpoint=endpoint, resource_name=self.resource, options=OPTIONS
        )
        call = unary_call(
            self.plugin_dir / KUBELET_SOCKET,
            REGISTER_METHOD,
            request,
            api_pb2.Empty,
            REGISTER_TIMEOUT_S,
        )
        task = loop.create_task(call)
        with self._cond:
            self._inflight = (endpoint, task)
            moved = endpoint != self._target
        if moved:
            task.cancel()
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            return False, f"register of {endpoint} abandoned: serving on a fresh socket", None
        except RpcError as exc:
            return False, f"{exc.code.name}: {exc.details}", None
        finally:
            with self._cond:
                if self._inflight is not None and self._inflight[0] == endpoint:
                    self._inflight = None
        return True, "", inode
