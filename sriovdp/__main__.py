"""``python -m sriovdp``: the ``sriov-supervisor`` CLI (runs in the CLI or supervisor process)."""

from sriovdp.supervisor.cli import main

if __name__ == "__main__":
    main()
