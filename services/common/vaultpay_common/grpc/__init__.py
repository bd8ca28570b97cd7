"""The grpc.aio server kit: interceptors, access rules, token verification, server runner."""
