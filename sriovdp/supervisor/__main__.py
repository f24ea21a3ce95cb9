"""``python -m sriovdp.supervisor --options JSON``: the supervisor process proper (supervisor
process).

``sriov-supervisor run`` parses its command line and environment with click, then replaces
itself (``os.execv``, same pid) with this fresh interpreter, which never imports click: the
supervisor lives as long as the node and keeps only what it runs. ``JSON`` is
``runopts.options_to_json(RunOptions)``.
"""

from __future__ import annotations

import sys

from sriovdp.launch.runtime import name_process
from sriovdp.shared import exitcodes, logs
from sriovdp.supervisor.main import run
from sriovdp.supervisor.runopts import options_from_json


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--options":
        print("usage: python -m sriovdp.supervisor --options JSON", file=sys.stderr)
        return exitcodes.FAILURE
    try:
        opts = options_from_json(argv[1])
    except ValueError as exc:
        print(f"python -m sriovdp.supervisor: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    logs.setup("supervisor", opts.log_level, opts.log_format)
    name_process("sriov-dp supervisor", "sdp-supervisor")
    return run(opts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
