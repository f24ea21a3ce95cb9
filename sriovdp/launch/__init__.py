"""Process start-up machinery: the zygote that forks children, the first steps every child takes,
and the small runtime helpers every child process uses (stop flag, signal wake-up pipe).

Nothing here knows devices, gRPC or netlink: the workers in :mod:`sriovdp.workers` do.
"""
