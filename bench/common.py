"""Scratch services for the benchmarks: a throw-away PostgreSQL database, settings switching."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import create_engine, text

from ftqueue.settings import reset_settings
from ftqueue.store import db

PG_SERVER = os.environ.get("FTQUEUE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


def use(env: dict[str, str]) -> None:
    """Switch this process's ftqueue settings (and engines) to ``env``."""
    os.environ.update(env)
    reset_settings()
    db.dispose_engines()


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def _admin(sql: str) -> None:
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(sql))
    admin.dispose()


def scratch_pg(prefix: str = "ftqueue_bench") -> tuple[str, str]:
    """A new empty database on the server: (URL, name)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    return f"{PG_SERVER}/{name}", name


def drop_pg(name: str) -> None:
    db.dispose_engines()
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
