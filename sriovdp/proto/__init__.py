"""Generated kubelet device plugin API v1beta1 (plugin workers and the kubelet stand-in only).

Never imported by the supervisor: importing this package pulls in grpc and protobuf.
"""
