"""Connection URLs: one ``postgresql://`` URL from settings, in the forms each driver wants."""

from __future__ import annotations

# Its own name, so that syncd's migrations never collide with the host API's own alembic history.
VERSION_TABLE = "syncd_alembic_version"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` → ``postgresql+asyncpg://…`` for SQLAlchemy's async engine."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {redact(url)}")


def asyncpg_dsn(url: str) -> str:
    """asyncpg takes plain libpq-style URLs."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def redact(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
