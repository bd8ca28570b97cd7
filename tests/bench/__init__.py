"""The benchmark harness behind `make bench` (`python -m tests.bench.run --help`).

Starts the mesh, measures auth's GetMe and Login and the wallet's GetBalance, GetMyWallet and
VerifyPin, direct gRPC and through Envoy as JSON, at several concurrency levels, each against a
reference from the same run (the GetJwks baseline, the bcrypt ceiling, or the idle p99), and
prints/saves a table with the goals beside the ratios.
"""
