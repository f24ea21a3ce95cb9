"""The method table of a server (plugin worker process): which handler serves which path.

A :class:`Method` is what the server needs to answer one gRPC path: the request message class,
whether responses stream, and the coroutine that handles it. :func:`service_methods` builds the
table of a whole protobuf service from its descriptor and a servicer object with one coroutine
method per RPC, named as in the ``.proto`` (the convention of grpc's generated servicers).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

if TYPE_CHECKING:
    from sriovdp.workers.grpcwire.connection import ServicerContext

#: unary: ``async (request, context) -> response``; server-streaming: ``async (request, context)
#: -> None`` sending with ``await context.write(message)``
Handler = Callable[[Any, "ServicerContext"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: ``path`` is the HTTP/2 ``:path``, ``/<package>.<Service>/<Method>``."""

    path: str
    request_class: type[Message]
    server_streaming: bool
    handler: Handler

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.count("/") != 2:
            raise ValueError(f"method path must look like /pkg.Service/Method, not {self.path!r}")


def service_methods(service: ServiceDescriptor, servicer: object) -> list[Method]:
    """The methods of ``service``, each served by the coroutine of the same name on ``servicer``.

    Raises ValueError for a client-streaming method (not supported) or a servicer that lacks a
    method or has a plain function where a coroutine is needed.
    """
    out = []
    for m in service.methods:
        if m.client_streaming:
            raise ValueError(f"{m.full_name}: client-streaming methods are not supported")
        handler = getattr(servicer, m.name, None)
        if handler is None or not inspect.iscoroutinefunction(handler):
            raise ValueError(f"{type(servicer).__name__}.{m.name} must be an async method")
        out.append(
            Method(
                path=f"/{service.full_name}/{m.name}",
                request_class=message_factory.GetMessageClass(m.input_type),
                server_streaming=m.server_streaming,
                handler=handler,
            )
        )
    return out
