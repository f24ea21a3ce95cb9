"""Exit codes shared by the CLI, the supervisor and its children (every process)."""

OK = 0
FAILURE = 1
#: invalid config or usage; ``run`` and ``validate-config`` exit with it
INVALID_CONFIG = 2
#: ``status``: something is not RUNNING (as supervisorctl's LSB codes)
NOT_RUNNING = 3
#: ``status``: the supervisor did not answer
UNREACHABLE = 4
#: a child that cannot start because of its config; the supervisor marks it FATAL, no restart loop
CHILD_CONFIG = 78  # EX_CONFIG
#: a second supervisor on a locked run dir
LOCKED = 75  # EX_TEMPFAIL
