"""sriov-dp: a Kubernetes device plugin for SR-IOV virtual functions and other PCI devices.

Subpackages by process: ``supervisor`` (the parent process and the CLI), ``workers`` (plugin
workers, health monitor, kubelet watcher), ``shared`` (config, discovery, bus messages: used by
all), ``proto`` (generated kubelet API, plugin workers only).
"""

__version__ = "0.1.0"
