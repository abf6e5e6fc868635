"""Fixtures shared by the e2e tests: a real redis-server per test (tests/e2e/redis_server.py)."""

from tests.e2e.redis_server import redis, redis_binary

__all__ = ["redis", "redis_binary"]
