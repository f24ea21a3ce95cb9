"""The control socket: a ROUTER serving ``status``, ``reload`` and ``restart`` (supervisor process).

Wire format, one msgpack map per frame (the CLI's DEALER may put an empty delimiter frame first):

- request ``{"v": 1, "id": int|str, "cmd": str, "args": {...}}``
- reply ``{"v": 1, "id": <the request's id>, "ok": true, "result": ...}`` or
  ``{"v": 1, "id": ..., "ok": false, "error": str}``

Requests are answered from the supervisor's own table inside its loop, so an answer never waits
for a worker. Anything malformed gets an error reply when it has a usable id, else it is dropped;
either way it is counted, and nothing a client sends can raise out of :meth:`ControlServer.handle`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from sriovdp.shared.bus import RunDir

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
_BATCH = 64

Handler = Callable[[Mapping[str, Any]], Any]


class CommandError(Exception):
    """A command refused (unknown child, invalid config): sent back as ``ok: false``."""


@dataclass(slots=True)
class ControlStats:
    requests: int = 0
    errors: int = 0
    dropped: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def count(self, reason: str, dropped: bool) -> None:
        if dropped:
            self.dropped += 1
        else:
            self.errors += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


class ControlServer:
    """ROUTER on ``control.sock``; :meth:`handle` is called from the supervisor's loop."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: Path, handlers: Mapping[str, Handler]
    ) -> None:
        self.stats = ControlStats()
        self._handlers = dict(handlers)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        self.sock.setsockopt(zmq.SNDHWM, 1000)
        self.sock.bind(RunDir.endpoint(RunDir(run_dir).control))

    def handle(self) -> None:
        """Answers every waiting request (up to a batch)."""
        for _ in range(_BATCH):
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._handle_one(frames)
            except Exception:  # never let a client crash the supervisor
                log.exception("control: request failed")
                self.stats.count("internal error", dropped=True)

    def _handle_one(self, frames: list[bytes]) -> None:
        # [identity, payload] from a plain DEALER, [identity, b"", payload] from a REQ-style one
        if len(frames) == 3 and frames[1] == b"":
            identity, envelope, payload = frames[0], [b""], frames[2]
        elif len(frames) == 2:
            identity, envelope, payload = frames[0], [], frames[1]
        else:
            self.stats.count("wrong frame count", dropped=True)
            return
        try:
            request = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except Exception:
            self.stats.count("undecodable", dropped=True)
            return
        if not isinstance(request, dict) or not isinstance(request.get("id"), (int, str)):
            self.stats.count("no request id", dropped=True)
            return
        rid = request["id"]
        self.stats.requests += 1

        def reply(body: dict[str, Any]) -> None:
            data = msgpack.packb({"v": PROTOCOL_VERSION, "id": rid, **body}, use_bin_type=True)
            try:
                self.sock.send_multipart([identity, *envelope, data], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                self.stats.count("reply undeliverable", dropped=True)

        cmd, args = request.get("cmd"), request.get("args", {})
        if request.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
            self.stats.count("bad version", dropped=False)
            reply({"ok": False, "error": f"unsupported protocol version {request.get('v')!r}"})
            return
        if not isinstance(cmd, str) or cmd not in self._handlers:
            self.stats.count("unknown command", dropped=False)
            known = ", ".join(sorted(self._handlers))
            reply({"ok": False, "error": f"unknown command {cmd!r} (known: {known})"})
            return
        if not isinstance(args, dict):
            self.stats.count("bad args", dropped=False)
            reply({"ok": False, "error": "args must be a map"})
            return
        try:
            result = self._handlers[cmd](args)
        except CommandError as exc:
            self.stats.count(f"{cmd} refused", dropped=False)
            reply({"ok": False, "error": str(exc)})
            return
        reply({"ok": True, "result": result})

    def close(self) -> None:
        self.sock.close()
