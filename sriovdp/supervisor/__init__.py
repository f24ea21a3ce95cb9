"""The supervisor process and the ``sriov-supervisor`` CLI.

Never imports grpc or pyroute2 (tests/test_import_hygiene.py proves it).
"""
