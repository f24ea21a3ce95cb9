"""Regenerates the v1beta1 Python modules from api.proto (developer tool, runs in no daemon).

`python -m sriovdp.proto.generate [OUTDIR]` writes api_pb2.py, api_pb2.pyi and api_pb2_grpc.py,
with the grpc module's import made package-relative. Without OUTDIR it writes beside api.proto;
tests call it with a temporary OUTDIR and compare, so stale generated code fails the suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def generate(outdir: Path) -> None:
    """Runs protoc (from grpcio-tools) on api.proto into outdir."""
    from grpc_tools import protoc  # test extra only

    outdir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{HERE}",
        f"--python_out={outdir}",
        f"--pyi_out={outdir}",
        f"--grpc_python_out={outdir}",
        str(HERE / "api.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on api.proto")
    grpc_mod = outdir / "api_pb2_grpc.py"
    text = grpc_mod.read_text()
    relative = text.replace("import api_pb2 as api__pb2", "from . import api_pb2 as api__pb2")
    grpc_mod.write_text(relative)


def main() -> None:
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)


if __name__ == "__main__":
    main()
