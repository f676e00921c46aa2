"""The prediction log: every prediction the service makes, and the labels that come back for it.

One table, ``predictions``: id, when it was made, the event time it describes (the row's timestamp, or ``as_of``
for entity requests, so that live metrics are partitioned like the data), model name and version, the model's
inputs (JSON), the predicted class and the positive-class probability, and the label once ``/feedback`` sends it.

SQLite by default (``$MLOPS_HOME/predictions.db``), PostgreSQL in production (``MLOPS_PREDICTION_LOG_URL``).
Writes never happen on the request path: :meth:`PredictionLog.submit` only appends to an in-memory queue, and a
writer thread inserts what has accumulated in one transaction (``executemany``) every ``flush_interval`` seconds or
as soon as ``batch_size`` records are waiting. A write error stops the writer and is raised by the next
:meth:`submit`, :meth:`flush` or :meth:`close`, never swallowed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:
    from datetime import datetime

_T = TypeVar("_T")

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(50), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("prediction", sa.Integer, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.Integer, nullable=True),
    sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True),
)


class PredictionLogError(RuntimeError):
    """The prediction log cannot be written (the message names the store)."""


class UnknownPredictionError(LookupError):
    """Feedback for ids that were never logged."""

    def __init__(self, ids: Sequence[str]):
        self.ids = list(ids)
        shown = ", ".join(self.ids[:10]) + (" ..." if len(self.ids) > 10 else "")
        super().__init__(f"no logged prediction with id: {shown}")


@dataclass(frozen=True)
class PredictionRecord:
    """One logged prediction (``label`` is None until feedback arrives)."""

    id: str
    predicted_at: Any  # datetime, UTC
    event_time: Any  # datetime, UTC
    model_name: str
    model_version: str
    inputs: dict[str, Any]
    prediction: int
    probability: float
    label: int | None = None


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; plain ``postgresql://`` URLs use psycopg 3 (SQLAlchemy 2.1's default)."""
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _wal(
            dbapi_conn: Any, _record: Any
        ) -> None:  # readers (the performance function) never block the writer
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class PredictionLog:
    """Batched, off-request-path writer and reader of the ``predictions`` table at ``url``."""

    def __init__(self, url: str, *, batch_size: int = 2000, flush_interval: float = 0.2):
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._written = 0  # records committed
        self._submitted = 0
        self._error: BaseException | None = None
        self._closed = False
        # Inserts go to the driver as tuples, converted by the columns' own SQLAlchemy bind processors: what
        # ``conn.execute(predictions.insert(), dicts)`` stores, at a third of its cost (the writer shares the
        # GIL with the request path).
        dialect = self.engine.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        names = [c.name for c in predictions.columns]
        self._insert_sql = (
            f"INSERT INTO {predictions.name} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
        )
        self._columns = [
            (c.name, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in predictions.columns
        ]
        self._writer = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------------------------ writing
    def submit(self, records: Sequence[dict[str, Any]]) -> None:
        """Queue records (dicts with the table's columns; ``inputs`` JSON text, a dict, or ``(columns, values,
        entity keys)``); returns at once."""
        self._raise_if_failed()
        if not records:
            return
        with self._cond:
            if self._closed:
                raise PredictionLogError(f"prediction log {self._where()} is closed")
            self._pending.extend(records)
            self._submitted += len(records)
            if len(self._pending) >= self.batch_size:
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(self.flush_interval)
                batch, self._pending = self._pending, []
                closing = self._closed
            if batch:
                try:
                    rows = self._rows(batch)  # serialized here, not on the request path
                    with self.engine.begin() as conn:
                        conn.exec_driver_sql(self._insert_sql, rows)
                except BaseException as err:  # kept and re-raised to the caller of submit/flush/close
                    with self._cond:
                        self._error = err
                        self._cond.notify_all()
                    return
                with self._cond:
                    self._written += len(batch)
                    self._cond.notify_all()
            elif closing:
                return
            if not closing:
                # Let records accumulate into one transaction instead of one insert per request.
                time.sleep(self.flush_interval if len(batch) < self.batch_size else 0)

    def _rows(self, batch: list[dict[str, Any]]) -> list[tuple]:
        for r in batch:
            r["inputs"] = _inputs_json(r["inputs"])
        cols = [[r.get(name) for r in batch] for name, _ in self._columns]
        for (_, proc), values in zip(self._columns, cols, strict=True):
            if proc is not None:
                values[:] = [None if v is None else proc(v) for v in values]
        return list(zip(*cols, strict=True))

    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything submitted so far is committed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            self._cond.notify_all()
            while self._written < target and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PredictionLogError(
                        f"prediction log {self._where()}: {target - self._written} record(s) not written "
                        f"after {timeout:.0f} s"
                    )
                self._cond.wait(min(left, 0.05))
        self._raise_if_failed()

    def close(self) -> None:
        """Write what is pending and stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._writer.join(timeout=60)
        self._raise_if_failed()
        self.engine.dispose()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise PredictionLogError(
                f"prediction log {self._where()}: writing failed: {self._error}"
            ) from self._error

    def _where(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    # ------------------------------------------------------------------------------------ feedback
    def attach_labels(self, ids: Sequence[str], labels: Sequence[int]) -> int:
        """Set the label of each logged prediction; raises :class:`UnknownPredictionError` (and changes nothing)
        when an id was never logged. Returns the number of predictions labeled."""
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
        self.flush()  # feedback may follow its prediction faster than the writer's interval
        now = _utcnow()
        with self.engine.begin() as conn:
            known: set[str] = set()
            for chunk in _chunks(list(ids), 500):
                rows = conn.execute(sa.select(predictions.c.id).where(predictions.c.id.in_(chunk)))
                known.update(r[0] for r in rows)
            missing = [i for i in ids if i not in known]
            if missing:
                raise UnknownPredictionError(missing)
            stmt = (
                predictions.update()
                .where(predictions.c.id == sa.bindparam("pid"))
                .values(label=sa.bindparam("plabel"), labeled_at=now)
            )
            conn.execute(stmt, [{"pid": i, "plabel": int(lab)} for i, lab in zip(ids, labels, strict=True)])
        return len(ids)

    # ------------------------------------------------------------------------------------ reading
    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())

    def records(
        self, ids: Sequence[str] | None = None, *, labeled_only: bool = False
    ) -> list[PredictionRecord]:
        """Logged predictions (all, or those with ``ids``), oldest event first."""
        q = sa.select(predictions).order_by(predictions.c.event_time, predictions.c.predicted_at)
        if labeled_only:
            q = q.where(predictions.c.label.is_not(None))
        out: list[PredictionRecord] = []
        with self.engine.connect() as conn:
            chunks = _chunks(list(ids), 500) if ids is not None else [None]
            for chunk in chunks:
                qq = q if chunk is None else q.where(predictions.c.id.in_(chunk))
                for r in conn.execute(qq).mappings():
                    out.append(
                        PredictionRecord(
                            id=r["id"],
                            predicted_at=_aware(r["predicted_at"]),
                            event_time=_aware(r["event_time"]),
                            model_name=r["model_name"],
                            model_version=r["model_version"],
                            inputs=json.loads(r["inputs"]),
                            prediction=int(r["prediction"]),
                            probability=float(r["probability"]),
                            label=None if r["label"] is None else int(r["label"]),
                        )
                    )
        return out


def _inputs_json(inputs: Any) -> str:
    """``inputs`` as JSON text: text as given, a dict, or ``(columns, values, entity keys or None)``; NaN -> null."""
    if isinstance(inputs, str):
        return inputs
    if isinstance(inputs, tuple):
        cols, values, entities = inputs
        doc = dict(entities or {})
        doc.update(zip(cols, values, strict=True))
    else:
        doc = dict(inputs)
    clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in doc.items()}
    return json.dumps(clean, allow_nan=False)


def _utcnow() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    from datetime import UTC

    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _chunks(items: list[_T], n: int) -> Iterator[list[_T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
