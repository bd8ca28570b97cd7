"""The benchmark harness behind `make bench` (`python -m tests.bench.run --help`).

Starts the mesh, measures Login and GetMe next to a trivial baseline RPC (GetJwks), direct
gRPC and through Envoy as JSON, at several concurrency levels, and prints/saves a table.
"""
