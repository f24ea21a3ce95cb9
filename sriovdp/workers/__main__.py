"""``python -m sriovdp.workers <role> [options]``: entry point of every child process.

Roles map to modules with a ``main(argv) -> int``; the module is imported only for its role, so a
kubelet watcher never loads grpc and only the health monitor loads pyroute2. In zygote mode the
zygote runs this too (role ``zygote``) and calls ``main`` of the others in the children it forks.
"""

from __future__ import annotations

import importlib
import sys

ROLES = {
    "plugin": "sriovdp.workers.plugin.main",
    "health-monitor": "sriovdp.workers.health_monitor",
    "kubelet-watcher": "sriovdp.workers.kubelet_watcher",
    "metrics": "sriovdp.workers.metrics.main",
    "zygote": "sriovdp.launch.zygote",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ROLES:
        print(f"usage: python -m sriovdp.workers {{{'|'.join(ROLES)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(ROLES[args[0]])
    code: int = module.main(args[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
