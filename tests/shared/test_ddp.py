"""sriovdp.shared.ddp: decoding devlink's info replies, one question per PF, and the real devlink
on this machine (whatever it answers for a PCI address that has no devlink instance, the answer
is a reason, never an exception out of discovery)."""

from __future__ import annotations

import errno
import os

import pytest
from pyroute2.netlink.devlink import DEVLINK_NAMES, devlinkcmd

from sriovdp.shared.ddp import DdpReader, DdpUnavailable, Devlink, running_versions


def info_reply(versions: list[tuple[str, str]]) -> devlinkcmd:
    """A DEVLINK_CMD_INFO_GET reply as the kernel sends it, encoded and decoded by pyroute2."""
    msg = devlinkcmd()
    msg["cmd"] = DEVLINK_NAMES["DEVLINK_CMD_INFO_GET"]
    msg["attrs"] = [
        ("DEVLINK_ATTR_BUS_NAME", "pci"),
        ("DEVLINK_ATTR_DEV_NAME", "0000:1c:00.0"),
        ("DEVLINK_ATTR_INFO_DRIVER_NAME", "ice"),
        *(
            ("DEVLINK_ATTR_INFO_VERSION_RUNNING", {"attrs": [
                ("DEVLINK_ATTR_INFO_VERSION_NAME", name),
                ("DEVLINK_ATTR_INFO_VERSION_VALUE", value)]})
            for name, value in versions
        ),
    ]  # fmt: skip
    msg.encode()
    decoded = devlinkcmd(msg.data)
    decoded.decode()
    return decoded


def test_running_versions_are_decoded_from_the_reply() -> None:
    versions = [("fw.mgmt", "7.3.4"), ("fw.app.name", "ICE COMMS Package"), ("fw.app", "1.3.35.0")]
    assert running_versions([info_reply(versions)]) == versions


class Answers:
    def __init__(self, replies: dict[str, list[tuple[str, str]] | int]) -> None:
        self.replies = replies
        self.asked = 0

    def running_versions(self, bus: str, device: str) -> list[tuple[str, str]]:
        self.asked += 1
        answer = self.replies[device]
        if isinstance(answer, int):
            raise OSError(answer, os.strerror(answer))
        return running_versions([info_reply(answer)])


def test_one_question_per_pf_and_failures_are_remembered() -> None:
    answers = Answers({"a": [("fw.app.name", "ICE OS Default Package")], "b": errno.ENODEV})
    reader = DdpReader(answers)
    assert reader.package("a") == reader.package("a") == "ICE OS Default Package"
    for _ in range(2):
        with pytest.raises(DdpUnavailable, match=r"^devlink cannot answer for PF b: no devlink"):
            reader.package("b")
    assert answers.asked == 2


def test_the_real_devlink_answers_with_a_reason() -> None:
    reader = DdpReader(Devlink())
    try:
        with pytest.raises(DdpUnavailable, match=r"^devlink cannot answer for PF 0000:ff:1f\.7: "):
            reader.package("0000:ff:1f.7")
    finally:
        reader.close()
