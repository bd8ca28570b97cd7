"""Redis client construction (redis-py asyncio). Redis is a fast path, never the truth."""

from __future__ import annotations

from redis.asyncio import Redis

__all__ = ["create_redis"]


def create_redis(url: str) -> Redis:
    """A pooled client with short timeouts so a slow Redis degrades rather than hangs."""
    return Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        health_check_interval=30,
        decode_responses=True,
    )
