"""Broker and bus client over real ipc:// sockets: forwarding, last-value cache, garbage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from sriovdp.shared.bus import BusClient, RunDir
from sriovdp.shared.messages import Envelope, LinkState, WorkerHeartbeat, WorkerReady
from sriovdp.supervisor.broker import Broker
from tests.harness.broker import BrokerThread


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    b = BrokerThread(tmp_path)
    yield b
    b.stop()


def _wait_for(client: BusClient, topic: str, tries: int = 100) -> Envelope:
    for _ in range(tries):
        env = client.receive(50)
        if env is not None and env.topic == topic:
            return env
    raise AssertionError(f"no message on {topic}")


def _link(name: str, up: bool) -> LinkState:
    return LinkState(name, 7, "UP" if up else "DOWN", up, True)


def test_forwards_and_late_subscriber_gets_retained_state(
    broker: BrokerThread, tmp_path: Path
) -> None:
    producer = BusClient(tmp_path, "health-monitor")
    early = BusClient(tmp_path, "early", subscribe=["link.pf0."])
    try:
        # wait until the early subscription has reached the broker, then publish
        for _ in range(50):
            producer.publish(_link("pf0", False))
            if early.receive(40) is not None:
                break
        producer.publish(_link("pf0", True))
        assert isinstance(_wait_for(early, "link.pf0.state").message, LinkState)
        late = BusClient(tmp_path, "late", subscribe=["link."])
        try:
            env = _wait_for(late, "link.pf0.state")
            assert env.message == _link("pf0", True)
        finally:
            late.close()
    finally:
        producer.close()
        early.close()


def test_non_retained_messages_are_not_replayed(broker: BrokerThread, tmp_path: Path) -> None:
    producer = BusClient(tmp_path, "w")
    producer.publish(WorkerHeartbeat("w", 1))
    producer.publish(_link("pf1", True))
    late = BusClient(tmp_path, "late", subscribe=["worker.", "link.pf1."])
    try:
        assert _wait_for(late, "link.pf1.state").message == _link("pf1", True)
        assert late.receive(100) is None
    finally:
        producer.close()
        late.close()


def test_subscriptions_are_told_and_whatever_is_published_after_reaches_them(
    broker: BrokerThread, tmp_path: Path
) -> None:
    sub = BusClient(tmp_path, "sub", subscribe=["link.pf2."])
    try:
        assert broker.wait_subscribed(b"link.pf2.")
        assert not broker.wait_subscribed(b"worker.", timeout=0.2)
        broker.publish(_link("pf2", True))  # once, no retry: the subscription is in place
        assert _wait_for(sub, "link.pf2.state").message == _link("pf2", True)
    finally:
        sub.close()


def test_garbage_on_every_socket_is_dropped_and_counted(
    broker: BrokerThread, tmp_path: Path
) -> None:
    rd = RunDir(tmp_path)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(RunDir.endpoint(rd.bus_in))
    xsub = ctx.socket(zmq.XSUB)
    xsub.connect(RunDir.endpoint(rd.bus_out))
    garbage: list[list[bytes]] = [
        [b"\xff\x00garbage"],
        [b"link.x.state", b"\xc1"],
        [b"link.x.state", msgpack.packb({"v": 1})],
        [b"link.x.state", msgpack.packb({"v": 99, "kind": "link.state"})],
        [b"link.x.state", msgpack.packb([1, 2, 3])],
        [b"a", b"b", b"c"],
        [b"link.x.state", b"\x00" * 200_000],
    ]
    for frames in garbage:
        push.send_multipart(frames)
    xsub.send(b"\x07not-a-subscription")
    probe = BusClient(tmp_path, "probe", subscribe=["link."])
    try:
        producer = BusClient(tmp_path, "hm")
        producer.publish(_link("ok0", True))
        assert _wait_for(probe, "link.ok0.state").message == _link("ok0", True)
        producer.close()
    finally:
        probe.close()
        push.close(0)
        xsub.close(0)
        ctx.term()
    # the garbage came over another connection than ok0: the broker may take ok0 first
    deadline = time.monotonic() + 30
    while broker.broker.stats.dropped < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert broker.broker.stats.dropped >= 6
    assert [e.topic for e in broker.seen] == ["link.ok0.state"]


def test_heartbeats_are_decoded_and_a_malformed_one_is_dropped(tmp_path: Path) -> None:
    """A valid heartbeat reaches on_message and is forwarded; a malformed one is dropped and
    counted."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    seen: list[Envelope] = []
    broker = Broker(ctx, tmp_path, on_message=seen.append)
    producer = BusClient(tmp_path, "w")
    push = ctx.socket(zmq.PUSH)
    push.connect(RunDir.endpoint(RunDir(tmp_path).bus_in))
    try:
        producer.publish(WorkerHeartbeat("w", 11))
        push.send_multipart([b"worker.w.hb", msgpack.packb({"v": 1, "kind": "worker.hb"})])
        producer.publish(WorkerReady("w", 11))
        for _ in range(200):
            if broker.pull.poll(50):
                broker.handle_pull()
            if broker.xpub.poll(0):
                broker.handle_xpub()
            if len(seen) == 2 and broker.stats.dropped:
                break
        assert [e.message for e in seen] == [WorkerHeartbeat("w", 11), WorkerReady("w", 11)]
        assert broker.stats.drop_reasons == {"malformed": 1}
        assert broker.stats.forwarded == 2  # the heartbeat went on to subscribers as well
    finally:
        producer.close()
        push.close(0)
        broker.close()
        ctx.term()
