"""Calls AuthService.GetMe through the gateway with the generated Python stub.

    TOKEN=...   # an access token, e.g. from POST /v1/auth/login (see the README)
    .venv/bin/python docs/examples/get_me.py --token "$TOKEN"            # 127.0.0.1:8080
    .venv/bin/python docs/examples/get_me.py --token "$TOKEN" --target 127.0.0.1:50051

Prints the caller's profile as JSON. The generated code is imported from one place,
`vaultpay.<package>.v1`, which the virtualenv of `make run` already has on its path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import grpc
from google.protobuf import json_format

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc


async def me(target: str, token: str) -> auth_pb2.User:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        reply = await stub.GetMe(
            auth_pb2.GetMeRequest(),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=10,
        )
        user: auth_pb2.User = reply.user
        return user


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:8080", help="gateway or service host:port")
    parser.add_argument("--token", default=os.environ.get("TOKEN"), help="access token ($TOKEN)")
    args = parser.parse_args()
    if not args.token:
        parser.error("give --token or set TOKEN")
    try:
        user = asyncio.run(me(args.target, args.token))
    except grpc.aio.AioRpcError as exc:
        print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(json_format.MessageToJson(user))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
