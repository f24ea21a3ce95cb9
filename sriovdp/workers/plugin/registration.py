"""Registration with the kubelet, retried until it succeeds (plugin worker process).

:meth:`Registrar.want` names the socket to register (after every fresh start of the server);
:meth:`Registrar.kick` asks for an immediate retry (kubelet.sock appeared or changed). Attempts
dial ``<plugin-dir>/kubelet.sock`` only when it exists; failures are retried after
:meth:`BackoffPolicy.delay <sriovdp.shared.backoff.BackoffPolicy.delay>` (capped exponential,
with jitter), logged when the reason changes, and never end the process. Registering is
idempotent: a kick while registered on the current kubelet socket (same file) and endpoint does
nothing.

The registrar is a task on the worker's one asyncio loop (thread ``grpc-loop``, the loop the
``grpc.aio`` servers run on; no thread of its own). Each attempt is one ``Register`` call with
grpcio (``grpc.aio``) on a fresh channel, closed after the call. The kubelet answers Register only
after dialling our socket back (up to 10 s): the call is awaited, so the same loop serves the
kubelet's GetDevicePluginOptions and ListAndWatch meanwhile. Between attempts the task waits on an
:class:`asyncio.Event` with the backoff delay as timeout (no timer while nothing is pending).
:meth:`want`, :meth:`kick`, :meth:`forget` and :meth:`stop` are called from the main thread: they
change the shared state under a lock and wake the task with ``call_soon_threadsafe``; a
:meth:`want` of a new endpoint abandons the attempt in flight (a stale Register the kubelet would
otherwise dial back for 10 s) by cancelling it, which cancels the call and tells the kubelet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.workers.plugin.servicer import OPTIONS

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
#: the kubelet dials back within Register for up to 10 s
REGISTER_TIMEOUT_S = 12.0
#: retry delays: 50 ms, 100 ms, ... up to 5 s (the worker's ``--register-backoff-max``), each
#: up to 20 % shorter at random
REGISTER_BACKOFF = BackoffPolicy(base=0.05, factor=2.0, cap=5.0, jitter=0.2)
#: how long stop() waits for the task to end (its call cancelled, its channel closed)
STOP_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    registered: bool
    endpoint: str | None
    attempts: int
    reason: str


#: a kubelet.sock file: (inode, ctime in ns). File systems hand a freed inode number to the next
#: file at once; the change time, set at creation, tells two such files apart
SocketIdentity = tuple[int, int]


def kubelet_identity(plugin_dir: Path) -> SocketIdentity | None:
    """Which ``kubelet.sock`` is there, if one is and it is a socket."""
    try:
        st = os.stat(plugin_dir / KUBELET_SOCKET)
    except OSError:
        return None
    return (st.st_ino, st.st_ctime_ns) if stat.S_ISSOCK(st.st_mode) else None


class Registrar:
    """Registers ``resource`` on the kubelet, as a task on an asyncio loop (see :meth:`start`)."""

    def __init__(
        self,
        plugin_dir: Path,
        resource: str,
        on_change: Callable[[RegistrationStatus], None],
        backoff: BackoffPolicy = REGISTER_BACKOFF,
    ) -> None:
        self.plugin_dir = plugin_dir
        self.resource = resource
        self._on_change = on_change
        self._backoff = backoff
        #: guards the state below: the main thread writes it, the loop reads and writes it
        self._lock = threading.Lock()
        self._stopped = False
        self._target: str | None = None
        self._pending = False
        self._failures = 0
        self._attempts = 0
        self._last_reason = ""
        self._retry_at: float | None = None
        self.registered_endpoint: str | None = None
        #: the kubelet.sock the registration was made on
        self.registered_identity: SocketIdentity | None = None
        self.first_attempt_done = threading.Event()
        # loop side: only ever touched on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: the Register call in flight and its endpoint; a new target cancels it
        self._inflight: tuple[str, asyncio.Task[None]] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Starts the task on ``loop`` (running in another thread); call once."""
        self._loop = loop
        asyncio.run_coroutine_threadsafe(self._begin(), loop).result(STOP_TIMEOUT_S)

    async def _begin(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="register")

    @property
    def registered(self) -> bool:
        return self.registered_endpoint is not None and self.registered_endpoint == self._target

    @property
    def pending(self) -> bool:
        return self._pending

    @property
    def done(self) -> bool:
        """Whether the task has ended (after :meth:`stop`)."""
        return self._task is not None and self._task.done()

    def want(self, endpoint: str) -> None:
        """Registers ``endpoint`` (a fresh socket name) as soon as possible."""
        with self._lock:
            self._target = endpoint
            self.registered_endpoint = None
            self._pending = True
            self._failures = 0
            self._retry_at = None
        self._poke()

    def kick(self, force: bool = False) -> bool:
        """Retries now unless registered on the current kubelet.sock; returns whether it will.

        ``force`` re-registers even when the file looks unchanged (the kubelet watcher's
        generation says it is a new kubelet).
        """
        identity = kubelet_identity(self.plugin_dir)
        with self._lock:
            if self._target is None:
                return False
            if (
                not force
                and self.registered
                and identity is not None
                and identity == self.registered_identity
            ):
                return False
            self.registered_endpoint = None
            self._pending = True
            self._failures = 0
            self._retry_at = None
        self._poke()
        return True

    def forget(self, reason: str) -> None:
        """The kubelet went away: we are no longer registered (a later kick registers again)."""
        with self._lock:
            was = self.registered
            self.registered_endpoint = None
            self.registered_identity = None
        if was:
            self._report(False, reason)

    def stop(self) -> None:
        """Ends the task and the call in flight (the kubelet sees it cancelled); waits for both."""
        with self._lock:
            self._stopped = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(Exception):  # a loop that is stopping: the task goes with it
            asyncio.run_coroutine_threadsafe(self._end(), loop).result(STOP_TIMEOUT_S)

    async def _end(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _poke(self) -> None:
        """Wakes the task from any thread (nothing to wake before start or after the loop)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(self._on_poke)

    def _on_poke(self) -> None:
        """On the loop: wake the task; abandon a call whose endpoint is no longer wanted."""
        if self._wake is not None:
            self._wake.set()
        inflight = self._inflight
        if inflight is not None and inflight[0] != self._target:
            # the kubelet would dial the old socket back for up to 10 s before refusing
            inflight[1].cancel()

    def _report(self, registered: bool, reason: str) -> None:
        self._on_change(
            RegistrationStatus(
                registered, self._target if registered else None, self._attempts, reason
            )
        )

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            wake.clear()  # before reading the state: a change after the read sets it again
            with self._lock:
                if self._stopped:
                    return
                target = self._target if self._pending else None
                retry_at = self._retry_at
            now = time.monotonic()
            if target is None or (retry_at is not None and now < retry_at):
                timeout = None if target is None or retry_at is None else retry_at - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
                continue
            ok, reason, identity = await self._attempt(target)
            self._record(target, ok, reason, identity)

    def _record(self, target: str, ok: bool, reason: str, identity: SocketIdentity | None) -> None:
        delay = 0.0
        with self._lock:
            self._attempts += 1
            current = target == self._target
            if ok and current:
                self._pending = False
                self._failures = 0
                self._retry_at = None
                self.registered_endpoint = target
                self.registered_identity = identity
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

    async def _attempt(self, endpoint: str) -> tuple[bool, str, SocketIdentity | None]:
        """One Register of ``endpoint``: (success, failure reason, which kubelet.sock)."""
        identity = kubelet_identity(self.plugin_dir)
        if identity is None:
            return False, f"{self.plugin_dir / KUBELET_SOCKET} absent", None
        request = api_pb2.RegisterRequest(
            version=API_VERSION, endpoint=endpoint, resource_name=self.resource, options=OPTIONS
        )
        call = asyncio.get_running_loop().create_task(self._register(request))
        self._inflight = (endpoint, call)
        if endpoint != self._target:  # moved on while we were getting here
            call.cancel()
        try:
            await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # stop(): this task itself is cancelled (and the call with it)
            return False, f"register of {endpoint} abandoned: serving on a fresh socket", None
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}", None
        except Exception as exc:  # grpcio refusing the call itself: retried like a failure
            return False, f"{type(exc).__name__}: {exc}", None
        finally:
            self._inflight = None
        return True, "", identity

    async def _register(self, request: api_pb2.RegisterRequest) -> None:
        target = f"unix:{self.plugin_dir / KUBELET_SOCKET}"
        async with grpc.aio.insecure_channel(target) as channel:
            stub = api_pb2_grpc.RegistrationStub(channel)  # type: ignore[no-untyped-call]
            await stub.Register(request, timeout=REGISTER_TIMEOUT_S)
