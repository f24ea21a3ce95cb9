"""deployments/: every manifest validates offline against a current Kubernetes release's strict
schemas, and the DaemonSet agrees with the CLI's real options, the model's default paths and the
example config."""

from __future__ import annotations

import copy
import json
import os
import shlex
import stat
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest

from sriovdp.shared import exitcodes, model, pools
from sriovdp.shared.config import parse_config
from sriovdp.shared.model import DeviceType, LegacyDriverKind, NodeConfig
from sriovdp.simnode import demo_node
from tests.deployments.conftest import (
    CONFIGMAP_FILE,
    DAEMONSET_FILE,
    DEPLOYMENTS,
    NAD_FILE,
    cli_command,
    daemonset,
    envvars,
    find,
    load_all,
    plugin_container,
    run_command,
)

#: a current release; kubernetes-validate ships its strict schemas offline
K8S_VERSION = "1.33"
LATEST = kubernetes_validate.latest_version()

MANIFESTS = sorted(DEPLOYMENTS.glob("*.yaml"))

#: NetworkAttachmentDefinition is a CRD (Multus): no upstream schema, so our own, strict on the
#: parts the device plugin and the CNI rely on
NAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "k8s.cni.cncf.io/v1"},
        "kind": {"const": "NetworkAttachmentDefinition"},
        "metadata": {
            "type": "object",
            "required": ["name", "annotations"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "annotations": {
                    "type": "object",
                    "required": ["k8s.v1.cni.cncf.io/resourceName"],
                    "properties": {
                        "k8s.v1.cni.cncf.io/resourceName": {
                            "type": "string",
                            "pattern": "^[a-z0-9.-]+/[A-Za-z0-9_-]+$",
                        }
                    },
                },
            },
        },
        "spec": {
            "type": "object",
            "required": ["config"],
            "additionalProperties": False,
            "properties": {"config": {"type": "string"}},
        },
    },
}
CNI_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["cniVersion", "type", "name"],
    "properties": {
        "cniVersion": {"enum": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]},
        "type": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
    },
}

#: run options whose value is a host path the DaemonSet must mount at the model's default
PATH_DEFAULTS = {
    "SRIOV_DP_CONFIG_FILE": model.DEFAULT_CONFIG_FILE,
    "SRIOV_DP_PLUGIN_DIR": model.DEFAULT_PLUGIN_DIR,
    "SRIOV_DP_SYSFS_ROOT": model.DEFAULT_SYSFS_ROOT,
    "SRIOV_DP_RUN_DIR": model.DEFAULT_RUN_DIR,
    "SRIOV_DP_DEVINFO_DIR": model.DEFAULT_DEVINFO_DIR,
    "SRIOV_DP_CDI_DIR": model.DEFAULT_CDI_DIR,
}


def validate_k8s(doc: dict[str, Any]) -> None:
    if doc["kind"] == "NetworkAttachmentDefinition":
        jsonschema.validate(doc, NAD_SCHEMA)
        jsonschema.validate(json.loads(doc["spec"]["config"]), CNI_CONFIG_SCHEMA)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def example_config() -> NodeConfig:
    (configmap,) = find(CONFIGMAP_FILE, "ConfigMap")
    return parse_config(configmap["data"]["config.json"], str(CONFIGMAP_FILE), "intel.com")


def container_env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in plugin_container()["env"]}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]
    return spec["template"]["spec"] if "template" in spec else spec


# --- schemas ---------------------------------------------------------------------------------


def test_schemas_of_a_current_release_are_available_offline() -> None:
    major, minor = (int(part) for part in K8S_VERSION.split("."))
    assert (major, minor) >= (1, 33)
    assert [int(p) for p in LATEST.split(".")[:2]] >= [major, minor]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path.name} holds no documents"
    for doc in docs:
        validate_k8s(doc)


@pytest.mark.parametrize("version", [K8S_VERSION, LATEST])
def test_daemonset_validates_against_current_releases(version: str) -> None:
    for doc in load_all(DAEMONSET_FILE):
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    ds = copy.deepcopy(daemonset())
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_nad_schema_rejects_config_that_is_not_cni_json() -> None:
    (nad, *_) = find(NAD_FILE, "NetworkAttachmentDefinition")
    broken = copy.deepcopy(nad)
    broken["spec"]["config"] = json.dumps({"type": "sriov", "name": "x"})  # no cniVersion
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(broken)
    unannotated = copy.deepcopy(nad)
    del unannotated["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"]
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(unannotated)


def test_every_manifest_is_covered() -> None:
    names = {p.name for p in MANIFESTS}
    assert {"sriovdp-daemonset.yaml", "configMap.yaml", "sriov-crd.yaml", "pod-tc1.yaml"} <= names
    assert any(p.name.startswith("pod-") and "dpdk" in p.name for p in MANIFESTS)


# --- DaemonSet against the CLI ------------------------------------------------------------------


def test_env_names_are_real_run_options() -> None:
    known = envvars(run_command())
    env = container_env()
    unknown = sorted(set(env) - set(known))
    assert not unknown, f"DaemonSet sets variables `run` does not read: {unknown}"
    visible = {name for name, param in known.items() if not getattr(param, "hidden", False)}
    missing = sorted(visible - set(env))
    assert not missing, f"DaemonSet leaves `run` options to defaults implicitly: {missing}"


def test_env_values_parse_with_the_real_run_command(monkeypatch: pytest.MonkeyPatch) -> None:
    env = container_env()
    params = parsed_run_env(monkeypatch, env)
    by_env = {name: param.name for name, param in envvars(run_command()).items()}
    for name, value in env.items():
        parsed = params[str(by_env[name])]
        if isinstance(parsed, bool):
            assert parsed is (value.lower() in ("1", "true", "yes", "on")), name
        elif isinstance(parsed, float):
            assert parsed == float(value), name
        else:
            assert str(parsed) == value, name


def test_path_options_are_the_model_defaults_and_mounted() -> None:
    env = container_env()
    mounts = {m["mountPath"]: m for m in plugin_container()["volumeMounts"]}
    for name, default in PATH_DEFAULTS.items():
        assert env[name] == default, name
        path = PurePosixPath(default)
        mount_path = str(path.parent) if name == "SRIOV_DP_CONFIG_FILE" else str(path)
        assert mount_path in mounts, f"{name}={default} is not mounted"
        assert "subPath" not in mounts[mount_path], f"{mount_path}: subPath mounts never update"
    assert mounts[model.DEFAULT_SYSFS_ROOT].get("readOnly") is True
    assert mounts[str(PurePosixPath(model.DEFAULT_CONFIG_FILE).parent)].get("readOnly") is True
    for writable in (model.DEFAULT_PLUGIN_DIR, model.DEFAULT_DEVINFO_DIR, model.DEFAULT_RUN_DIR):
        assert not mounts[writable].get("readOnly"), writable


def test_host_mounts_are_the_same_paths_on_the_host() -> None:
    spec = daemonset()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    host_dev = str(PurePosixPath(container_env()["SRIOV_DP_DEV_ROOT"]) / "dev")
    for mount in plugin_container()["volumeMounts"]:
        volume = volumes[mount["name"]]
        if mount["mountPath"] == host_dev:  # only looked at, never shared: not at /dev
            assert volume["hostPath"]["path"] == "/dev"
            assert mount["readOnly"] is True
            continue
        if "hostPath" in volume:
            # the kubelet, Multus and the CNI look at the host paths: they must be the same
            assert volume["hostPath"]["path"] == mount["mountPath"], mount["name"]
    config = volumes[
        next(
            m["name"] for m in plugin_container()["volumeMounts"] if m["mountPath"] == "/etc/pcidp"
        )
    ]
    (configmap,) = find(CONFIGMAP_FILE, "ConfigMap")
    assert config["configMap"]["name"] == configmap["metadata"]["name"]
    keys = {item["key"]: item["path"] for item in config["configMap"].get("items", [])}
    assert keys.get("config.json", "config.json") == PurePosixPath(model.DEFAULT_CONFIG_FILE).name
    assert "config.json" in configmap["data"]


def every_node_a_spec_names(tmp_path: Path) -> dict[str, set[str]]:
    """Driver family -> host paths of the device nodes it names, from the real families on a
    fake node with a device of every kind (vfio-pci, no-IOMMU vfio, igb_uio, RDMA, vhost-net,
    vhost-vdpa, CXI)."""
    from sriovdp.workers.plugin import drivers

    node = demo_node(tmp_path / "sys")  # VFs bound to iavf, vfio-pci and igb_uio
    node.add_pf("0000:10:00.0", netdev="mlx0", driver="mlx5_core", vendor="15b3", device="1017",
                vf_device="1018", num_vfs=2, vf_driver="mlx5_core", rdma=True)  # fmt: skip
    node.add_function("0000:40:00.0", driver="vfio-pci", noiommu=True, device="1889")
    node.add_function("0000:41:00.0", driver="cxi_core", vendor="17db", device="0501")
    node.add_cxi("0000:41:00.0")
    node.add_function("0000:42:00.0", driver="virtio-pci", vendor="1af4", device="1041")
    node.add_vdpa("0000:42:00.0", "vhost_vdpa")
    config = parse_config(
        json.dumps({"resourceList": [
            {"resourceName": "vdpa", "selectors": {"vendors": ["1af4"], "vdpaType": "vhost"}},
            {"resourceName": "rdma", "selectors": {"isRdma": True}},
            {"resourceName": "rest", "selectors": {"needVhostNet": True}},
        ]}),
        "c.json",
        "intel.com",
    )  # fmt: skip
    found: dict[str, set[str]] = {}
    ctx = drivers.DriverContext()
    for result in pools.discover(config, node.root, tmp_path):
        for device in result.devices:
            for family in drivers.families_for(device):
                found.setdefault(family.name, set()).update(family.nodes(device, ctx))
    return {name: paths for name, paths in found.items() if paths}


def test_every_device_node_a_spec_names_is_visible_in_the_pod(tmp_path: Path) -> None:
    """The worker looks each node up as <SRIOV_DP_DEV_ROOT>/<host path>: that path must be a
    read-only mount of the host's own node, so what it sees is what the kubelet will find."""
    nodes = every_node_a_spec_names(tmp_path)
    assert set(nodes) == {"vfio", "uio", "rdma", "vhost", "vdpa", "cxi"}
    assert {"/dev/vhost-net", "/dev/net/tun", "/dev/vfio/vfio"} <= set().union(*nodes.values())
    assert any(p.startswith("/dev/vfio/noiommu-") for p in nodes["vfio"])
    dev_root = PurePosixPath(container_env()["SRIOV_DP_DEV_ROOT"])
    spec = daemonset()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = plugin_container()["volumeMounts"]
    for path in sorted(set().union(*nodes.values())):
        inside = dev_root / path.lstrip("/")
        under = [m for m in mounts if inside.is_relative_to(m["mountPath"])]
        assert under, f"{path}: {inside} is on no mount of the pod"
        mount = max(under, key=lambda m: len(m["mountPath"]))
        host = volumes[mount["name"]].get("hostPath", {}).get("path")
        assert host is not None, f"{path}: {mount['mountPath']} is not a host path"
        assert PurePosixPath(host) / inside.relative_to(mount["mountPath"]) == PurePosixPath(path)
        assert mount.get("readOnly") is True, f"{mount['mountPath']} must be read-only"


def test_host_network_and_least_privilege() -> None:
    spec = daemonset()["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec.get("hostPID", False) is False
    assert spec.get("hostIPC", False) is False
    security = plugin_container()["securityContext"]
    assert security.get("privileged", False) is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security["capabilities"].get("add")
    assert security["readOnlyRootFilesystem"] is True
    # root uid, not root privileges: the kubelet dir is root-owned
    assert security["runAsUser"] == 0


def test_scheduled_on_sriov_nodes_only() -> None:
    spec = daemonset()["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["feature.node.kubernetes.io/network-sriov.capable"] == "true"
    assert spec["tolerations"]


#: the supervisor's shutdown beyond the per-child stop grace: its own deadline (grace + 2 s), the
#: spawner's exit (1 s) and, at worst, killing the spawner (5 s more); see supervisor/main.py
SHUTDOWN_OVERHEAD = 8.0


def parsed_run_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, Any]:
    for name in list(os.environ):
        if name.startswith("SRIOV_DP_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = run_command()
    for param in command.params:  # the pod's paths exist in the pod, not where tests run
        if isinstance(param.type, click.Path):
            monkeypatch.setattr(param.type, "exists", False)
    return command.make_context("run", []).params


def test_termination_grace_exceeds_the_supervisor_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    params = parsed_run_env(monkeypatch, container_env())
    grace = daemonset()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > params["stop_grace"] + SHUTDOWN_OVERHEAD


def test_resources_requests_and_limits_are_set() -> None:
    resources = plugin_container()["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"], key


# --- probes ----------------------------------------------------------------------------------


EXEC_PROBES_FILE = DEPLOYMENTS / "patches" / "exec-probes.yaml"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def exec_probes_patch() -> dict[str, Any]:
    (patch,) = load_all(EXEC_PROBES_FILE)
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["name"] == plugin_container()["name"]
    probes: dict[str, Any] = {k: v for k, v in container.items() if k in PROBES}
    return probes


def with_exec_probes() -> dict[str, Any]:
    """The DaemonSet as ``kubectl patch --patch-file`` leaves it (strategic merge: a null deletes
    the key, maps merge, the container list merges by name)."""
    ds = copy.deepcopy(daemonset())
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    for name, patch in exec_probes_patch().items():
        merged = {**container[name], **patch}
        container[name] = {k: v for k, v in merged.items() if v is not None}
    return ds


def probe_command(name: str) -> list[str]:
    """The documented exec alternative of a probe (deployments/patches/exec-probes.yaml)."""
    (container,) = with_exec_probes()["spec"]["template"]["spec"]["containers"]
    command: list[str] = container[name]["exec"]["command"]
    return command


def metrics_port() -> int:
    from sriovdp.workers.metrics.address import split_address

    host, port = split_address(container_env()["SRIOV_DP_METRICS_ADDRESS"])
    assert host in ("0.0.0.0", "::"), "probes and scrapes come to the node's address"
    return port


def test_http_probes_ask_the_metrics_child() -> None:
    from sriovdp.workers.metrics.main import Endpoints
    from sriovdp.workers.metrics.model import NodeView

    routes = Endpoints(NodeView()).routes()
    (port,) = [p for p in plugin_container()["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == metrics_port()
    assert port["protocol"] == "TCP"
    probe = plugin_container()["readinessProbe"]
    assert "exec" not in probe
    assert probe["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "/readyz" in routes
    annotations = daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port())
    assert annotations["prometheus.io/path"] in routes


def test_liveness_never_depends_on_the_metrics_port() -> None:
    """A metrics port taken on the node must not restart the pod (and every pool with it):
    startup and liveness ask the supervisor itself."""
    for name in ("startupProbe", "livenessProbe"):
        probe = plugin_container()[name]
        assert "httpGet" not in probe, name
        assert probe["exec"]["command"] == ["sriov-supervisor", "status", "--check", "live"]


def test_metrics_stay_on_with_http_probes() -> None:
    assert container_env().get("SRIOV_DP_METRICS", "true") == "true"


def test_the_exec_probe_patch_gives_a_valid_daemonset() -> None:
    kubernetes_validate.validate(with_exec_probes(), K8S_VERSION, strict=True)
    (container,) = with_exec_probes()["spec"]["template"]["spec"]["containers"]
    for name in PROBES:
        assert set(container[name]) & {"exec", "httpGet"} == {"exec"}, name


def status_invocation(command: list[str]) -> list[str]:
    """The ``sriov-supervisor status ...`` words of a probe command (direct or inside ``sh -c``)."""
    if command[:2] == ["sh", "-c"]:
        words = shlex.split(command[2].split(";")[0])
        words = [w for w in words if not w.startswith((">", "2>"))]
    else:
        words = list(command)
    assert words[:2] == ["sriov-supervisor", "status"], command
    return words[2:]


@pytest.mark.parametrize(
    ("probe", "check"),
    [("readinessProbe", "ready"), ("livenessProbe", "live"), ("startupProbe", "live")],
)
def test_probe_runs_a_real_status_check(probe: str, check: str) -> None:
    args = status_invocation(probe_command(probe))
    assert args[args.index("--check") + 1] == check
    status = cli_command("status")
    status.make_context("status", list(args))  # raises on an unknown option
    # the probe runs in the container's environment: status must find the control socket there
    assert "SRIOV_DP_RUN_DIR" in envvars(status)


def fake_status(tmp_path: Path, code: int) -> dict[str, str]:
    """PATH with a ``sriov-supervisor`` that exits ``code`` (and prints a table like status)."""
    bindir = tmp_path / f"bin{code}"
    bindir.mkdir()
    script = bindir / "sriov-supervisor"
    script.write_text(f'#!/bin/sh\necho "pool RUNNING"\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bindir}:/usr/bin:/bin"}


@pytest.mark.parametrize(
    ("probe", "passes_on"),
    [
        ("readinessProbe", {exitcodes.OK}),
        ("livenessProbe", {exitcodes.OK}),
        ("startupProbe", {exitcodes.OK}),
    ],
)
def test_probe_verdict_per_status_exit_code(
    tmp_path: Path, probe: str, passes_on: set[int]
) -> None:
    command = probe_command(probe)
    for code in (exitcodes.OK, exitcodes.NOT_RUNNING, exitcodes.UNREACHABLE):
        result = subprocess.run(
            command, env=fake_status(tmp_path, code), capture_output=True, timeout=10, check=False
        )
        assert (result.returncode == 0) == (code in passes_on), (probe, code, result)


@pytest.mark.parametrize("probe", PROBES)
def test_probe_timeout_leaves_room_for_the_status_timeout(probe: str) -> None:
    args = status_invocation(probe_command(probe))
    params = cli_command("status").make_context("status", list(args)).params
    assert exec_probes_patch()[probe]["timeoutSeconds"] >= params["timeout"] + 2, probe


# --- the example config, networks and pods -------------------------------------------------------


def test_example_config_is_valid_and_uses_both_formats() -> None:
    config = example_config()
    legacy = [p for p in config.pools if p.legacy_driver is not None]
    selector = [p for p in config.pools if p.legacy_driver is None]
    assert {p.resource for p in legacy} >= {"intel.com/sriov_net_A", "intel.com/sriov_net_B"}
    assert selector


def network_pools(config: NodeConfig) -> set[str]:
    return {p.resource for p in config.pools if p.device_type is not DeviceType.ACCELERATOR}


def test_one_network_per_network_pool() -> None:
    nads = find(NAD_FILE, "NetworkAttachmentDefinition")
    annotated = [n["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"] for n in nads]
    assert len(annotated) == len(set(annotated)), "two networks name the same pool"
    assert set(annotated) == network_pools(example_config())
    for nad in nads:
        cni = json.loads(nad["spec"]["config"])
        assert cni["type"] == "sriov"
        assert cni["name"] == nad["metadata"]["name"]


def pods() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in load_all(path) if doc["kind"] == "Pod"]


def extended(resources: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in resources.items() if "/" in k}


def test_pods_request_pools_of_the_example_config_and_name_their_networks() -> None:
    resources = {p.resource for p in example_config().pools}
    nads = {
        n["metadata"]["name"]: n["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"]
        for n in find(NAD_FILE, "NetworkAttachmentDefinition")
    }
    assert pods()
    for pod in pods():
        networks = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"].split(",")
        requested: dict[str, str] = {}
        for container in pod_spec(pod)["containers"]:
            requests = extended(container["resources"]["requests"])
            # extended resources cannot be overcommitted: requests must equal limits
            assert requests == extended(container["resources"]["limits"])
            requested.update(requests)
        assert set(requested) <= resources, pod["metadata"]["name"]
        for network in networks:
            assert network.strip() in nads, network
            assert nads[network.strip()] in requested, f"{network}: its pool is not requested"


def test_pod_tc1_requests_sriov_net_a() -> None:
    (pod,) = find(DEPLOYMENTS / "pod-tc1.yaml", "Pod")
    (container,) = pod["spec"]["containers"]
    assert extended(container["resources"]["limits"]) == {"intel.com/sriov_net_A": "1"}


def test_dpdk_pod_requests_a_vfio_pool_with_hugepages_and_ipc_lock() -> None:
    (pod,) = [p for p in pods() if "dpdk" in p["metadata"]["name"]]
    config = example_config()
    vfio = {
        p.resource
        for p in config.pools
        if p.legacy_driver is LegacyDriverKind.VFIO
        or any(s.drivers == ("vfio-pci",) for s in p.selectors)
    }
    (container,) = pod["spec"]["containers"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert set(extended(requests)) & vfio
    hugepages = {k: v for k, v in requests.items() if k.startswith("hugepages-")}
    assert hugepages and all(limits[k] == v for k, v in hugepages.items())
    assert "IPC_LOCK" in container["securityContext"]["capabilities"]["add"]
    assert not container["securityContext"].get("privileged", False)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounted = [volumes[m["name"]] for m in container["volumeMounts"]]
    assert any(v.get("emptyDir", {}).get("medium") == "HugePages" for v in mounted)
