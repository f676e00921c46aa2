"""Whether the registry's databases answer, checked once before a command reads them.

MLflow retries a tracking database it cannot reach for about 100 s, logging a warning each time, and then raises a
long chain of SQLAlchemy errors; a command that meets an unreachable store should say so in one line, at once, naming
the store and the cause. :func:`check_reachable` opens one short connection to each database (psycopg for
PostgreSQL, sqlite3 read-only for a SQLite file that exists) and raises
:class:`~mlops_assets.registry.errors.RegistryUnavailableError` otherwise.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlops_assets.registry.errors import RegistryUnavailableError
from mlops_assets.storage import Storage

CONNECT_TIMEOUT_SECONDS = 5


def registry_stores(storage: Storage) -> list[tuple[str, str, str]]:
    """(what, setting, URL) of each database the registry reads: MLflow's tracking store, the deployment
    history."""
    return [
        ("the MLflow tracking database", "MLFLOW_TRACKING_URI", storage.mlflow_tracking_uri),
        ("the deployment history database", "MLOPS_DEPLOYMENT_HISTORY_URL", storage.deployment_history_url),
    ]


def check_reachable(storage: Storage) -> None:
    """Raise :class:`RegistryUnavailableError` naming the first registry database that cannot be reached."""
    for what, setting, url in registry_stores(storage):
        cause = probe(url)
        if cause is not None:
            raise RegistryUnavailableError(f"{what} ({setting}={redact(url)}) cannot be reached: {cause}")


def probe(url: str) -> str | None:
    """Why the database at ``url`` cannot be reached (one line), or None when it answers or is not a database
    probed here (an HTTP tracking server, a SQLite file not created yet)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("postgres"):
        import psycopg

        dsn = "postgresql://" + url.split("://", 1)[1]
        try:
            psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
        except psycopg.Error as err:
            return one_line(str(err))
        return None
    if scheme == "sqlite" and url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not path.exists():
            return None
        try:
            conn = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=CONNECT_TIMEOUT_SECONDS
            )
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as err:
            return f"{path}: {one_line(str(err))}"
    return None


def one_line(message: str) -> str:
    """A driver's message on one line (psycopg spreads one error over several)."""
    return "; ".join(part.strip() for part in message.strip().splitlines() if part.strip())


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
