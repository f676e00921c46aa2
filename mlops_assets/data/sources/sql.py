"""A SQL source: a SQLAlchemy URL and one query, read only.

Every statement runs on a connection made read-only (``SET TRANSACTION READ ONLY`` on PostgreSQL, ``PRAGMA
query_only`` on SQLite) and through a server-side cursor, which takes exactly one SELECT/VALUES statement:
``COMMIT; DELETE ...`` cannot end the read-only transaction and write. The rows themselves are read with the query as
written; the cheap probes (time range, columns, fingerprint) wrap it as a subquery, ``SELECT min(ts), max(ts),
count(*) FROM (<query>) q``, so the database aggregates and only one row crosses the wire.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from mlops_assets.config import MlopsConfig
from mlops_assets.data.sources.base import (
    BaseSource,
    SourceError,
    SourceUnavailableError,
    TimeRange,
    stamps_range,
)

ORIGIN = "dataset.query"
# An ISO 8601 zone designator at the end of a timestamp string.
_ZONE = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


class SqlSource(BaseSource):
    """The rows of ``dataset.query`` on the database at ``dataset.source``."""

    def __init__(self, cfg: MlopsConfig):
        super().__init__(cfg)
        if not cfg.dataset.query:
            raise SourceError("dataset.query is required when dataset.source is a database URL")
        self.url = cfg.dataset.source
        self.query = cfg.dataset.query

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A read-only connection streaming results through a server-side cursor; errors name the URL."""
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(self.url)
        except (sa.exc.ArgumentError, ModuleNotFoundError) as err:
            raise SourceError(f"dataset.source: not a usable database URL: {err}") from None
        connected = False
        try:
            with engine.connect() as conn:
                connected = True
                # Read-only: the pipeline never writes to a source database.
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                elif engine.dialect.name == "sqlite":
                    conn.exec_driver_sql("PRAGMA query_only = ON")
                conn.execution_options(stream_results=True)
                yield conn
        except sa.exc.SQLAlchemyError as err:
            # A database that cannot be connected to, or whose connection broke, is infrastructure; a statement it
            # refuses on a live connection is the query's (SQLite reports both as OperationalError).
            lost = not connected or bool(getattr(err, "connection_invalidated", False))
            raise (SourceUnavailableError if lost else SourceError)(
                f"dataset.query failed on {engine.url.render_as_string(hide_password=True)}: {err}"
            ) from None
        finally:
            engine.dispose()

    def _subquery(self, *columns: str):
        """The query as a subquery ``q`` (a trailing semicolon dropped, as a subquery cannot hold one)."""
        import sqlalchemy as sa

        inner = self.query.strip().rstrip(";")
        return sa.text(inner).columns(*(sa.column(c) for c in columns)).subquery("q")

    def _statement(self, columns: list[str] | None):
        import sqlalchemy as sa

        if columns is None:
            return sa.text(self.query)
        sub = self._subquery(*columns)
        return sa.select(*(sub.c[c] for c in columns))

    def _raw_batches(
        self, batch_rows: int | None, columns: list[str] | None
    ) -> Iterator[tuple[str, pd.DataFrame]]:
        with self._connection() as conn:
            if batch_rows is None:
                yield ORIGIN, pd.read_sql_query(self._statement(columns), conn)
            else:
                for frame in pd.read_sql_query(self._statement(columns), conn, chunksize=batch_rows):
                    yield ORIGIN, frame

    def _raw_head(self, rows: int) -> tuple[str, pd.DataFrame]:
        # The first chunk of the server-side cursor: only ``rows`` rows are fetched.
        with self._connection() as conn:
            chunks = pd.read_sql_query(self._statement(None), conn, chunksize=rows)
            first = next(iter(chunks), None)
            if first is None:  # no rows: the column names from the cursor
                first = pd.DataFrame(columns=self._stored_columns(conn))
            return ORIGIN, first

    def _stored_columns(self, conn) -> list[str]:
        import sqlalchemy as sa

        # The cursor's description: executing the query opens it, no row is fetched.
        result = conn.execute(sa.text(self.query))
        try:
            return [str(k) for k in result.keys()]
        finally:
            result.close()

    def columns(self) -> list[str]:
        with self._connection() as conn:
            return self._output_columns(self._stored_columns(conn))

    def label_values(self, enough: Callable[[list[Any]], bool]) -> list[Any]:
        """At most three distinct labels, chosen by the database: one row each crosses the wire."""
        import sqlalchemy as sa

        label = self.cfg.dataset.label_column
        sub = self._subquery(label)
        statement = sa.select(sub.c[label]).where(sub.c[label].is_not(None)).distinct().limit(3)
        with self._connection() as conn:
            return [row[0] for row in conn.execute(statement)]

    def _aggregate(self, conn) -> tuple[object, object, int]:
        """min and max of the timestamp column and the row count, computed by the database (no min/max for a
        timestamp derived from row order)."""
        import sqlalchemy as sa

        if self.cfg.dataset.timestamp_from_row_order is not None:
            sub = self._subquery()
            return None, None, int(conn.execute(sa.select(sa.func.count()).select_from(sub)).scalar_one())
        ts = self.cfg.dataset.timestamp_column
        sub = self._subquery(ts)
        lo, hi, n = conn.execute(
            sa.select(sa.func.min(sub.c[ts]), sa.func.max(sub.c[ts]), sa.func.count())
        ).one()
        return lo, hi, int(n)

    def _nonempty_aggregate(self, conn) -> tuple[Any, Any, int]:
        """The aggregate row, refusing an empty source or missing timestamps (naming which)."""
        lo, hi, n = self._aggregate(conn)
        if n == 0:
            raise SourceError(f"dataset.source {self.describe()!r}: the source holds no rows")
        if lo is None or hi is None:
            raise SourceError(
                f"{ORIGIN}: timestamp column {self.cfg.dataset.timestamp_column!r} has missing values"
            )
        return lo, hi, n

    def _row_count(self) -> int:
        with self._connection() as conn:
            return self._aggregate(conn)[2]

    def _stored_time_range(self) -> TimeRange:
        with self._connection() as conn:
            lo, hi, n = self._nonempty_aggregate(conn)
            if not isinstance(lo, str) or self._text_sorts_as_time(conn, lo, str(hi)):
                return stamps_range([lo, hi], self.cfg, ORIGIN)
        # Text the database cannot order as time (a custom format, mixed widths or zones): the column alone.
        return self._scan_time_range()

    def _text_sorts_as_time(self, conn, lo: str, hi: str) -> bool:
        """Whether the database's text min/max are the earliest and latest instants: ISO 8601 strings of one
        width and one zone designator sort as the times they name."""
        import sqlalchemy as sa

        if self.cfg.dataset.timestamp_format is not None or not isinstance(hi, str) or len(lo) != len(hi):
            return False
        zone_lo, zone_hi = _ZONE.search(lo), _ZONE.search(hi)
        if (zone_lo and zone_lo.group(0)) != (zone_hi and zone_hi.group(0)):
            return False
        ts = self.cfg.dataset.timestamp_column
        sub = self._subquery(ts)
        col = sub.c[ts]
        probes = [sa.func.min(sa.func.length(col)), sa.func.max(sa.func.length(col))]
        if zone_lo is not None:
            tail = sa.func.substr(col, len(lo) - len(zone_lo.group(0)) + 1)
            probes += [sa.func.min(tail), sa.func.max(tail)]
        row = conn.execute(sa.select(*probes)).one()
        same_width = row[0] == row[1] == len(lo)
        same_zone = zone_lo is None or row[2] == row[3] == zone_lo.group(0)
        return bool(same_width and same_zone)

    def snapshot(self) -> tuple[TimeRange, str, dict[str, Any]]:
        """Time range, :meth:`fingerprint` and the newest timestamp as stored (JSON-able: a datetime as flagged ISO
        text, for :meth:`time_range_after`) from one aggregate, so all three describe the same state of a table that
        is being appended to (separate queries can straddle a commit)."""
        with self._connection() as conn:
            lo, hi, n = self._nonempty_aggregate(conn)
            sortable = not isinstance(lo, str) or self._text_sorts_as_time(conn, lo, str(hi))
        rng = stamps_range([lo, hi], self.cfg, ORIGIN) if sortable else self._scan_time_range()
        token = [self.describe(), self.query, str(lo), str(hi), n]
        fingerprint = hashlib.sha256(json.dumps(token).encode()).hexdigest()
        stored = (
            {"value": hi.isoformat(), "datetime": True}
            if hasattr(hi, "isoformat")
            else {"value": hi, "datetime": False}
        )
        return rng, fingerprint, stored

    def time_range_after(self, watermark: dict[str, Any]) -> TimeRange | None:
        """The time range of the rows newer than ``watermark`` (the third item :meth:`snapshot` returned earlier), compared
        by the database in the column's own type; None when there are none. One aggregate row."""
        import datetime as dt

        import sqlalchemy as sa

        ts = self.cfg.dataset.timestamp_column
        sub = self._subquery(ts)
        bound = watermark["value"]
        if watermark["datetime"]:
            bound = dt.datetime.fromisoformat(bound)
        with self._connection() as conn:
            lo, hi = conn.execute(
                sa.select(sa.func.min(sub.c[ts]), sa.func.max(sub.c[ts])).where(sub.c[ts] > bound)
            ).one()
        return None if lo is None else stamps_range([lo, hi], self.cfg, ORIGIN)

    def fingerprint(self) -> str:
        """The source, the query and the database's min/max timestamp and row count: one aggregate row."""
        with self._connection() as conn:
            lo, hi, n = self._aggregate(conn)
        token = [self.describe(), self.query, str(lo), str(hi), n]
        return hashlib.sha256(json.dumps(token).encode()).hexdigest()
