"""gRPC over HTTP/2 in pure Python on the ``h2`` library (plugin worker process).

Just what a device plugin needs, without grpcio's C-core and its threads: unary and
server-streaming RPCs over h2c (prior knowledge, no TLS) on unix sockets, protobuf messages, no
compression. :mod:`.server` serves the DevicePlugin API on one asyncio loop; :mod:`.client` makes
one unary call (Register on the kubelet); :mod:`.framing` and :mod:`.status` are the wire
details both share. The peer is grpc-go (the kubelet); tests use grpcio as the independent peer.
"""
