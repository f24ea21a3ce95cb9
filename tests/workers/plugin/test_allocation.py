"""Precomputed Allocate answers and driver families (allocation, drivers, devinfo, cdi)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.allocation import AllocationError, AllocationTable
from sriovdp.workers.plugin.cdi import spec_document
from sriovdp.workers.plugin.devinfo import DevInfoWriter
from sriovdp.workers.plugin.drivers import DriverContext, DriverFamily, Spec, register
from sriovdp.workers.plugin.drivers.registry import unregister
from tests.workers.plugin.factories import pool, vf

ENV = "PCIDEVICE_EXAMPLE_COM_NET"


def build(
    *devices: PoolDevice, ctx: DriverContext | None = None, cdi: bool = False
) -> AllocationTable:
    return AllocationTable(pool(), devices, ctx or DriverContext(Path("/nonexistent")), use_cdi=cdi)


def answer(table: AllocationTable, ids: list[str]) -> Any:
    return table.response(table.validate(ids))


def specs(resp: Any) -> list[tuple[str, str, str]]:
    return [(d.container_path, d.host_path, d.permissions) for d in resp.devices]


def test_vfio_specs_info_and_dedup() -> None:
    a, b = vf(0, 0, "vfio-pci", group="7"), vf(0, 1, "vfio-pci", group="8")
    resp = answer(build(a, b), [b.id, a.id])
    assert resp.envs[ENV] == f"{b.id},{a.id}"  # request order
    assert specs(resp) == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
        ("/dev/vfio/8", "/dev/vfio/8", "rw"),
        ("/dev/vfio/7", "/dev/vfio/7", "rw"),
    ]
    info = json.loads(resp.envs[ENV + "_INFO"])
    assert info[a.id] == {
        "generic": {"deviceID": a.id},
        "vfio": {"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/7"},
    }


def test_vfio_noiommu_host_path() -> None:
    d = vf(0, 0, "vfio-pci", group="3", noiommu=True)
    assert ("/dev/vfio/3", "/dev/vfio/noiommu-3", "rw") in specs(answer(build(d), [d.id]))


def test_uio_and_netdev() -> None:
    u = vf(0, 0, "igb_uio", uio=("uio4",))
    n = vf(0, 1, "iavf", extra=(("k", "v"),))
    table = build(u, n)
    resp = answer(table, [u.id])
    assert specs(resp) == [("/dev/uio4", "/dev/uio4", "rw")]
    assert json.loads(resp.envs[ENV + "_INFO"])[u.id]["uio"] == {"mount": "/dev/uio4"}
    resp = answer(table, [n.id])
    assert specs(resp) == []
    assert json.loads(resp.envs[ENV + "_INFO"]) == {
        n.id: {"generic": {"deviceID": n.id}, "extra": {"k": "v"}}
    }
    assert table.prepared[n.id].families == ("netdev",)


def test_rdma_and_vhost(tmp_path: Path) -> None:
    (tmp_path / "dev/net").mkdir(parents=True)
    (tmp_path / "dev/vhost-net").touch()
    (tmp_path / "dev/net/tun").touch()
    chars = ("/dev/infiniband/issm0", "/dev/infiniband/umad0", "/dev/infiniband/uverbs0")
    d = vf(0, 0, "mlx5_core", rdma=("mlx5_0",), rdma_char=chars, is_rdma=True, vhost=True)
    table = build(d, ctx=DriverContext(tmp_path))
    resp = answer(table, [d.id])
    paths = [s[1] for s in specs(resp)]
    assert paths == [*chars, "/dev/infiniband/rdma_cm", "/dev/vhost-net", "/dev/net/tun"]
    info = json.loads(resp.envs[ENV + "_INFO"])[d.id]
    assert info["rdma"]["uverbs"] == "/dev/infiniband/uverbs0"
    assert info["rdma"]["rdma_dev"] == "mlx5_0"
    assert info["vhost"] == {"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"}
    doc = json.loads(table.prepared[d.id].devinfo_body)
    assert doc == {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": d.id,
            "pf-pci-address": "0000:00:00.0",
            "rdma-device": "mlx5_0",
            "vhost-net": "/dev/vhost-net",
        },
    }


def test_vhost_nodes_left_out_when_missing_on_host(tmp_path: Path) -> None:
    d = vf(0, 0, "vfio-pci", vhost=True)
    assert all(
        "vhost" not in s[1] for s in specs(answer(build(d, ctx=DriverContext(tmp_path)), [d.id]))
    )


def test_refusals_are_typed_and_name_the_id() -> None:
    a, b = vf(0, 0), vf(0, 1)
    table = build(a, b)
    for ids in [[], ["0000:ff:00.0"], [a.id, a.id], ["x" * 100_000], [a.id] * 3000]:
        with pytest.raises(AllocationError) as err:
            table.validate(ids)
        assert err.value.code == "INVALID_ARGUMENT"
        assert len(str(err.value)) < 300
    with pytest.raises(AllocationError, match=r"0000:ff:00\.0"):
        table.validate(["0000:ff:00.0"])
    assert [e.id for e in table.validate([b.id, a.id])] == [b.id, a.id]  # health is not its job


def test_cdi_answer_and_spec() -> None:
    a, n = vf(0, 0, "vfio-pci", group="9"), vf(0, 1, "iavf")
    table = build(a, n, cdi=True)
    resp = answer(table, [a.id, n.id])
    assert list(resp.devices) == []
    assert [c.name for c in resp.cdi_devices] == [
        f"example.com/net-pci={a.id}",
        f"example.com/net-pci={n.id}",
    ]
    assert resp.annotations["cdi.k8s.io/example.com_net"] == ",".join(
        c.name for c in resp.cdi_devices
    )
    doc = spec_document(table)
    assert doc["kind"] == "example.com/net-pci"
    by_name = {d["name"]: d["containerEdits"] for d in doc["devices"]}
    assert by_name[a.id]["deviceNodes"][1] == {
        "path": "/dev/vfio/9",
        "hostPath": "/dev/vfio/9",
        "permissions": "rw",
    }
    assert "deviceNodes" not in by_name[n.id] and by_name[n.id]["env"]  # never empty edits


def test_devinfo_writer_failure_is_counted(tmp_path: Path) -> None:
    d = vf(0, 0)
    table = build(d)
    (tmp_path / "file").write_text("not a directory")
    writer = DevInfoWriter(tmp_path / "file" / "sub")
    errors = writer.write([table.prepared[d.id]])
    assert len(errors) == 1 and writer.failures == 1
    good = DevInfoWriter(tmp_path / "ok")
    assert good.write([table.prepared[d.id]]) == []
    path = tmp_path / "ok" / "example.com-net-0000:10:00.0-device.json"
    assert json.loads(path.read_text())["pci"]["pci-address"] == d.id
    assert good.prune("example.com/net", set(), [d.id], grace=0) == ([d.id], 0)
    assert not path.exists()


class FakeAccel(DriverFamily):
    """A device type defined entirely outside the core modules."""

    name = "fake-accel"

    def applies(self, device: PoolDevice) -> bool:
        return device.function.driver == "fake_accel"

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        return (Spec("/dev/accel0", f"/dev/accel-{device.function.vf_index}"),)

    def info(self, device: PoolDevice, ctx: DriverContext) -> dict[str, Any]:
        return {"accel": {"queue": device.function.vf_index}}


@pytest.fixture
def fake_accel() -> Iterator[None]:
    register(FakeAccel)
    yield
    unregister(FakeAccel.name)


def test_new_device_type_without_touching_core(fake_accel: None) -> None:
    d = vf(0, 5, "fake_accel")
    resp = answer(build(d), [d.id])
    assert specs(resp) == [("/dev/accel0", "/dev/accel-5", "rw")]
    assert json.loads(resp.envs[ENV + "_INFO"])[d.id]["accel"] == {"queue": 5}
