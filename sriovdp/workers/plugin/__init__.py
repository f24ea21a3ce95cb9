"""The plugin worker (one process per resource pool): the kubelet's v1beta1 DevicePlugin.

Modules, one job each: ``main`` (argv, process setup, the main loop), ``state`` (device table and
health), ``servicer`` (the five RPCs), ``server`` (gRPC on a fresh unix socket), ``registration``
(Register with the kubelet, retried), ``allocation`` (precomputed Allocate answers), ``preferred``
(GetPreferredAllocation), ``devinfo`` and ``cdi`` (files for Multus and CDI), ``drivers`` (device
types as plug-ins), ``bus_link`` (health and kubelet events from the bus), ``rescan`` (VF changes).

Importing this package creates no gRPC or ZeroMQ object (``server`` and ``registration`` import
grpcio, which starts nothing until a server or channel is made): a zygote may import it and fork.
The worker's threads are listed in ``main``.
"""
