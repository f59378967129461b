"""Wait for PostgreSQL and Redis, and create the database if it is missing. Idempotent."""

import sys
import time
from pathlib import Path

import environ
import psycopg
import redis
from psycopg import sql

BASE = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE / ".env", overwrite=False)


def wait(what: str, check, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            check()
            return
        except Exception as exc:  # any failure means "not up yet"
            if time.monotonic() > deadline:
                sys.exit(f"{what} is not reachable: {exc}\nStart it, or set its URL in .env.")
            time.sleep(0.5)


def main() -> None:
    db = env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/tollgate")
    conninfo = {
        "host": db["HOST"] or None,
        "port": db["PORT"] or None,
        "user": db["USER"] or None,
        "password": db["PASSWORD"] or None,
        "dbname": "postgres",
    }

    def create_db():
        with psycopg.connect(**conninfo, autocommit=True, connect_timeout=3) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (db["NAME"],)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
                print(f"created database {db['NAME']}", file=sys.stderr)

    wait("PostgreSQL", create_db)
    redis_url = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
    wait("Redis", lambda: redis.Redis.from_url(redis_url, socket_timeout=2).ping())


if __name__ == "__main__":
    main()
