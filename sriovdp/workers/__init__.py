"""Child processes: one plugin worker per pool, the health monitor, the kubelet watcher.

``python -m sriovdp.workers <role> ...`` starts one of them.
"""
