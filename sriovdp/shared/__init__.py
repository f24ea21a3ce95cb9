"""Code shared by every process: config, sysfs discovery, naming, bus messages and client.

Nothing here may import grpc or pyroute2 at module level: the supervisor imports this package.
"""
