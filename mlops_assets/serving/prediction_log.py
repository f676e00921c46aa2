"""The prediction log: every prediction the service makes, and the labels that come back for it.

One table, ``predictions``: id, when it was made, the event time it describes (the row's timestamp, or ``as_of``
for entity requests, so that live metrics are partitioned like the data), model name and version, the model's
inputs (JSON), the predicted class and the positive-class probability, and the label once ``/feedback`` sends it.

SQLite by default (``$MLOPS_HOME/predictions.db``), PostgreSQL in production (``MLOPS_PREDICTION_LOG_URL``).
Writes never happen on the request path: :meth:`PredictionLog.submit` only appends to an in-memory queue, and a
writer thread inserts what has accumulated in one transaction (``executemany``) every ``flush_interval`` seconds or
as soon as ``batch_size`` records are waiting.

The database may be away for a while (a lock held, a server restarted): a batch that cannot be written within
``write_timeout`` is spilled to a JSON-lines file in ``spill_dir`` (fsynced, then renamed into place), later batches
go straight to files while the outage lasts, and every ``retry_interval`` seconds the writer replays the files,
oldest first, each in one transaction (an insert that skips ids already stored, so a batch whose commit succeeded
but was not acknowledged is not doubled); a replayed file is deleted only after its commit. Files left when the
process stops are replayed by the next :class:`PredictionLog` on the same directory. Meanwhile :meth:`status` says
"degraded" with the reason, and :meth:`flush` (and so feedback) waits or raises :class:`PredictionLogError` naming
what is kept where. Nothing submitted is dropped. ``on_change`` hears of each outage twice, on the writer thread: when
writing first fails (with the reason) and when every kept record is stored again (with None).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime as _datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:
    from datetime import datetime

_T = TypeVar("_T")

log = logging.getLogger("mlops_assets.serving")

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


# What a challenger in shadow (rollout.mode: shadow) answered for the same rows: one row per champion prediction
# it scored (``id`` is the champion's prediction id), the model-call time of the shadow and of the champion on the
# same batch (milliseconds per batch, so the two compare like for like), and the error when the shadow failed.
shadow_predictions = sa.Table(
    "shadow_predictions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(50), nullable=False, index=True),
    sa.Column("champion_version", sa.String(50), nullable=False),
    sa.Column("prediction", sa.Integer, nullable=True),
    sa.Column("probability", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("champion_latency_ms", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
)


class PredictionLogError(RuntimeError):
    """The prediction log cannot be written (the message names the store)."""


class UnknownPredictionError(LookupError):
    """Feedback for ids that were never logged."""

    def __init__(self, ids: Sequence[str]):
        self.ids = list(ids)
        shown = ", ".join(self.ids[:10]) + (" ..." if len(self.ids) > 10 else "")
        super().__init__(f"no logged prediction with id: {shown}")


class LabelConflictError(LookupError):
    """Feedback for ids that already have a label (labels are written once)."""

    def __init__(self, ids: Sequence[str]):
        self.ids = list(ids)
        shown = ", ".join(self.ids[:10]) + (" ..." if len(self.ids) > 10 else "")
        super().__init__(f"already labeled (labels are written once): {shown}")


class FutureLabelError(ValueError):
    """Feedback for predictions whose event time is still in the future."""

    def __init__(self, ids: Sequence[str], now: datetime):
        self.ids = list(ids)
        shown = ", ".join(self.ids[:10]) + (" ..." if len(self.ids) > 10 else "")
        super().__init__(f"the event of these predictions is after {now:%Y-%m-%dT%H:%M:%SZ}: {shown}")


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


def make_engine(url: str, timeout: float = 30.0) -> sa.Engine:
    """An engine for ``url``; plain ``postgresql://`` URLs use psycopg 3 (SQLAlchemy 2.1's default). ``timeout``:
    how long a statement waits for a lock (SQLite) or a connection (PostgreSQL) before it fails."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": timeout})

        @sa.event.listens_for(engine, "connect")
        def _wal(
            dbapi_conn: Any, _record: Any
        ) -> None:  # readers (the performance function) never block the writer
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        return engine
    return sa.create_engine(
        url, pool_pre_ping=True, pool_timeout=timeout, connect_args={"connect_timeout": max(1, int(timeout))}
    )


def default_spill_dir(url: str) -> Path:
    """Where records wait while the database at ``url`` is away: beside a SQLite file; required otherwise."""
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///") :])
        return db.with_name(db.name + ".spill")
    raise ValueError(
        f"prediction log {url!r}: give spill_dir, a local directory for records the database refuses"
    )


def _short(err: BaseException) -> str:
    # The first line only: SQLAlchemy appends the statement and its parameters (the logged inputs).
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def create_tables(engine: sa.Engine, attempts: int = 3) -> None:
    """The log's tables, created once however many services start at the same moment (``serve --workers N``,
    several replicas): a CREATE that loses the race to another process's fails ("already exists" on SQLite and
    PostgreSQL, a duplicate type on PostgreSQL) and is retried, when the tables are found and left alone."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except sa.exc.DatabaseError as err:
            text = str(err).lower()
            if attempt == attempts - 1 or not ("already exists" in text or "duplicate" in text):
                raise


class PredictionLog:
    """Batched, off-request-path writer and reader of the ``predictions`` table at ``url`` (see the module
    docstring for what happens while the database is away). ``table``: the table written (``shadow_predictions``
    for a shadow's answers, with spill files of their own)."""

    SPILL_PREFIX = "predictions-"

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 2000,
        flush_interval: float = 0.2,
        spill_dir: str | Path | None = None,
        write_timeout: float = 5.0,
        retry_interval: float = 1.0,
        on_change: Callable[[str | None], None] | None = None,
        table: sa.Table = predictions,
    ):
        self.url = url
        self.table = table
        self.spill_prefix = f"{table.name}-" if table is not predictions else self.SPILL_PREFIX
        # Told on the writer thread, so it must return at once (the service hands the news to another thread).
        self.on_change = on_change
        self.engine = make_engine(url, timeout=write_timeout)
        create_tables(self.engine)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.spill_dir = Path(spill_dir) if spill_dir is not None else default_spill_dir(url)
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._written = 0  # records submitted here and committed (directly or replayed)
        self._submitted = 0
        self._replayed = 0  # records committed from spill files (this process's and earlier ones')
        self._error: BaseException | None = None  # the latest write failure, until a write succeeds again
        self._writing_since: float | None = None  # monotonic start of the write in progress
        self._next_retry = 0.0
        # Spill files waiting, oldest first: path -> records submitted by this process in it (0 for files an
        # earlier process left).
        self._spills: dict[Path, int] = {
            p: 0 for p in sorted(self.spill_dir.glob(f"{self.spill_prefix}*.jsonl"), key=_spill_order)
        }
        self._closed = False
        self._labels_lock = threading.Lock()
        # Inserts go to the driver as tuples, converted by the columns' own SQLAlchemy bind processors: what
        # ``conn.execute(predictions.insert(), dicts)`` stores, at a third of its cost (the writer shares the
        # GIL with the request path).
        dialect = self.engine.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        names = [c.name for c in table.columns]
        cols, marks = ", ".join(names), ", ".join([mark] * len(names))
        self._insert_sql = f"INSERT INTO {table.name} ({cols}) VALUES ({marks})"
        # Replays skip ids already stored: a spilled batch may have been committed by an attempt whose answer
        # was lost.
        if dialect.name == "sqlite":
            self._replay_sql = f"INSERT OR IGNORE INTO {table.name} ({cols}) VALUES ({marks})"
        elif dialect.name == "postgresql":
            self._replay_sql = self._insert_sql + " ON CONFLICT (id) DO NOTHING"
        else:
            self._replay_sql = self._insert_sql
        self._columns = [
            (c.name, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in table.columns
        ]
        if self._spills:
            log.warning(
                "prediction log %s: %d spilled file(s) in %s from an earlier run; replaying them",
                self._where(),
                len(self._spills),
                self.spill_dir,
            )
        self._writer = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------------------------ writing
    def submit(self, records: Sequence[dict[str, Any]]) -> None:
        """Queue records (dicts with the table's columns; ``inputs`` JSON text, a dict, or ``(columns, values,
        entity keys)``); returns at once, whether or not the database is there."""
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
            if self._spills and (closing or time.monotonic() >= self._next_retry):
                self._replay()
            if batch:
                self._write(batch)
            elif closing:
                return
            if not closing:
                # Let records accumulate into one transaction instead of one insert per request.
                time.sleep(self.flush_interval if len(batch) < self.batch_size else 0)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for r in batch:
            if "inputs" in r:
                r["inputs"] = _inputs_json(r["inputs"])  # serialized here, not on the request path
        if not self._spills:  # while files wait, the database is known to be away: do not stall on it again
            self._writing_since = time.monotonic()
            try:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(self._insert_sql, self._rows(batch))
            except Exception as err:
                self._failed(err)
            else:
                self._recovered()
                with self._cond:
                    self._written += len(batch)
                    self._cond.notify_all()
                return
            finally:
                self._writing_since = None
        try:
            self._spill(batch)
        except OSError as err:  # the disk refuses too: keep the records in memory, first in line
            self._failed(err)
            with self._cond:
                self._pending[:0] = batch
            time.sleep(self.retry_interval)

    def _spill(self, batch: list[dict[str, Any]]) -> None:
        name = f"{self.spill_prefix}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        path, tmp = self.spill_dir / name, self.spill_dir / (name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in batch:
                f.write(json.dumps({k: _to_json(v) for k, v in r.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # only complete files are ever replayed
        self._spills[path] = len(batch)

    def _replay(self) -> None:
        for path, own in list(self._spills.items()):
            try:
                with open(path, encoding="utf-8") as f:
                    batch = [_from_json(json.loads(line)) for line in f if line.strip()]
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(self._replay_sql, self._rows(batch))
            except Exception as err:
                self._failed(err)
                return
            path.unlink()
            del self._spills[path]
            with self._cond:
                self._written += own
                self._replayed += len(batch)
                self._cond.notify_all()
        self._recovered()

    def _failed(self, err: BaseException) -> None:
        first = self._error is None
        if first:
            log.warning(
                "prediction log %s: writing failed (%s); records are kept in %s and retried every %.1f s",
                self._where(),
                _short(err),
                self.spill_dir,
                self.retry_interval,
            )
        self._error = err
        self._next_retry = time.monotonic() + self.retry_interval
        if first:
            self._tell(_short(err))

    def _recovered(self) -> None:
        if self._error is not None and not self._spills:
            log.warning("prediction log %s: writing again; every kept record is stored", self._where())
            self._error = None
            self._tell(None)

    def _tell(self, error: str | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(error)
        except Exception:
            # A listener's bug must not stop the writer thread: every later prediction would stay in memory.
            log.exception("prediction log %s: the status listener failed", self._where())

    def _rows(self, batch: list[dict[str, Any]]) -> list[tuple]:
        cols = [[r.get(name) for r in batch] for name, _ in self._columns]
        for (_, proc), values in zip(self._columns, cols, strict=True):
            if proc is not None:
                values[:] = [None if v is None else proc(v) for v in values]
        return list(zip(*cols, strict=True))

    def status(self) -> dict[str, Any]:
        """``{"status": "ok"}``, or ``"degraded"`` with why while records wait (a failed write, spilled files, or
        a write blocked for longer than its interval allows)."""
        spilled = len(self._spills)
        err = self._error
        since = self._writing_since
        blocked = since is not None and time.monotonic() - since > 1.0 + 2 * self.flush_interval
        if err is None and not spilled and not blocked:
            return {"status": "ok"}
        out: dict[str, Any] = {
            "status": "degraded",
            "spilled_files": spilled,
            "spill_dir": str(self.spill_dir),
        }
        if err is not None:
            out["error"] = _short(err)
        elif since is not None:  # blocked
            out["error"] = f"a write has been waiting for the database for {time.monotonic() - since:.1f} s"
        return out

    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything submitted so far is committed; :class:`PredictionLogError` after ``timeout``
        (the records stay queued or spilled, and are written when the database is back)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            self._cond.notify_all()
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    why = f" ({_short(self._error)})" if self._error is not None else ""
                    raise PredictionLogError(
                        f"prediction log {self._where()}: {target - self._written} record(s) not written after "
                        f"{timeout:g} s{why}; they are kept (in memory or in {self.spill_dir}) and written when "
                        "the database is back"
                    )
                self._cond.wait(min(left, 0.05))

    def close(self) -> None:
        """Write what is pending and stop the writer; what the database refuses stays in the spill directory for
        the next start."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._writer.join(timeout=60)
        if self._spills:
            log.warning(
                "prediction log %s: %d file(s) of records kept in %s; they are replayed at the next start",
                self._where(),
                len(self._spills),
                self.spill_dir,
            )
        self.engine.dispose()

    def _where(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    # ------------------------------------------------------------------------------------ feedback
    def attach_labels(
        self, ids: Sequence[str], labels: Sequence[int], *, wait: float = 10.0, now: datetime | None = None
    ) -> int:
        """Set the label of each logged prediction, all or nothing. Refused (nothing changes) when an id was never
        logged (:class:`UnknownPredictionError`), already has a label (:class:`LabelConflictError`: labels are
        written once) or describes an event after ``now`` (:class:`FutureLabelError`: an outcome cannot be known
        before its event). Waits up to ``wait`` seconds for predictions still queued or spilled;
        :class:`PredictionLogError` when the database is away. Returns the number of predictions labeled."""
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
        self.flush(timeout=wait)  # feedback may follow its prediction faster than the writer's interval
        now = now or _utcnow()
        c = predictions.c
        try:
            # One writer of labels at a time in this process: the checks and the update see the same rows.
            with self._labels_lock, self.engine.begin() as conn:
                known: dict[str, tuple[int | None, datetime]] = {}
                for chunk in _chunks(list(ids), 500):
                    rows = conn.execute(sa.select(c.id, c.label, c.event_time).where(c.id.in_(chunk)))
                    known.update((r[0], (r[1], r[2])) for r in rows)
                missing = [i for i in ids if i not in known]
                if missing:
                    raise UnknownPredictionError(missing)
                labeled = [i for i in ids if known[i][0] is not None]
                if labeled:
                    raise LabelConflictError(labeled)
                future = [i for i in ids if known[i][1] is not None and _aware(known[i][1]) > now]  # type: ignore[operator]
                if future:
                    raise FutureLabelError(future, now)
                stmt = (
                    predictions.update()
                    .where(c.id == sa.bindparam("pid"), c.label.is_(None))
                    .values(label=sa.bindparam("plabel"), labeled_at=now)
                )
                conn.execute(
                    stmt, [{"pid": i, "plabel": int(lab)} for i, lab in zip(ids, labels, strict=True)]
                )
        except sa.exc.DBAPIError as err:
            raise PredictionLogError(
                f"prediction log {self._where()}: labels not stored ({_short(err)})"
            ) from err
        return len(ids)

    # ------------------------------------------------------------------------------------ reading
    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())

    def labeled_scores(
        self, model_name: str, version: str, *, since: datetime | None = None, limit: int = 10_000
    ) -> tuple[list[int], list[float]]:
        """Labels and probabilities of ``version``'s newest labeled predictions (``limit`` at most; made at or
        after ``since`` when given)."""
        c = predictions.c
        q = (
            sa.select(c.label, c.probability)
            .where(c.model_name == model_name, c.model_version == version, c.label.is_not(None))
            .order_by(c.predicted_at.desc())
            .limit(limit)
        )
        if since is not None:
            q = q.where(c.predicted_at >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [int(r[0]) for r in rows], [float(r[1]) for r in rows]

    def shadow_pairs(
        self, model_name: str, version: str, *, since: datetime | None = None
    ) -> dict[str, list]:
        """See :func:`shadow_pairs`."""
        return shadow_pairs(self.engine, model_name, version, since=since)

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


def _to_json(v: Any) -> Any:
    return {"$dt": v.isoformat()} if isinstance(v, _datetime) else v


def _from_json(record: dict[str, Any]) -> dict[str, Any]:
    return {k: _datetime.fromisoformat(v["$dt"]) if isinstance(v, dict) else v for k, v in record.items()}


def _spill_order(path: Path) -> str:
    return path.name  # names start with a zero-padded time


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


def shadow_pairs(
    engine: sa.Engine, model_name: str, version: str, *, since: datetime | None = None
) -> dict[str, list]:
    """What shadow ``version`` and the champion answered for the same rows (made at or after ``since``), as
    columns: ``champion_prediction``, ``champion_probability``, ``label`` (None until feedback), ``prediction``,
    ``probability`` (None where the shadow failed), ``latency_ms``, ``champion_latency_ms``, ``error``,
    ``predicted_at``. Pairs whose champion row is not stored yet are left out; nothing when no shadow ever ran."""
    s, p = shadow_predictions.c, predictions.c
    cols = [
        p.prediction.label("champion_prediction"),
        p.probability.label("champion_probability"),
        p.label,
        s.prediction,
        s.probability,
        s.latency_ms,
        s.champion_latency_ms,
        s.error,
        s.predicted_at,
    ]
    q = (
        sa.select(*cols)
        .select_from(shadow_predictions.join(predictions, p.id == s.id))
        .where(s.model_name == model_name, s.model_version == version)
    )
    if since is not None:
        q = q.where(s.predicted_at >= since)
    names = [c.name for c in cols]
    if not sa.inspect(engine).has_table(shadow_predictions.name):
        return {name: [] for name in names}
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}


def read_shadow_pairs(
    url: str, model_name: str, version: str, *, since: datetime | None = None
) -> dict[str, list]:
    """:func:`shadow_pairs` from the prediction log at ``url`` (for readers outside the service)."""
    engine = make_engine(url)
    try:
        return shadow_pairs(engine, model_name, version, since=since)
    finally:
        engine.dispose()


def count_shadow_rows(url: str, model_name: str, version: str) -> int:
    """Rows shadow ``version`` scored, stored so far (0 when no shadow ever ran)."""
    engine = make_engine(url)
    try:
        if not sa.inspect(engine).has_table(shadow_predictions.name):
            return 0
        c = shadow_predictions.c
        q = sa.select(sa.func.count()).where(c.model_name == model_name, c.model_version == version)
        with engine.connect() as conn:
            return int(conn.execute(q).scalar_one())
    finally:
        engine.dispose()


def remove_older_than(
    url: str, model_name: str, cutoff: datetime, *, keep_shadow: str | None = None, dry_run: bool = False
) -> tuple[int, int]:
    """Remove (``dry_run``: count) ``model_name``'s prediction-log rows made before ``cutoff`` and the shadow
    answers beside them, except what its shadow version ``keep_shadow`` answered; (predictions, shadow answers).
    One transaction: a shadow answer is never left without its prediction or the other way round."""
    engine = make_engine(url)
    try:
        inspector = sa.inspect(engine)
        has_log, has_shadow = (
            inspector.has_table(predictions.name),
            inspector.has_table(shadow_predictions.name),
        )
        if not has_log:
            return 0, 0
        p, s = predictions.c, shadow_predictions.c
        old = sa.and_(p.model_name == model_name, p.predicted_at < cutoff)
        kept: Any = sa.false()
        if keep_shadow is not None and has_shadow:
            kept = p.id.in_(sa.select(s.id).where(s.model_name == model_name, s.model_version == keep_shadow))
        doomed = sa.and_(old, sa.not_(kept))
        doomed_shadow = s.id.in_(sa.select(p.id).where(doomed)) if has_shadow else None
        with engine.begin() as conn:
            n_shadow = 0
            if doomed_shadow is not None:
                count = sa.select(sa.func.count()).select_from(shadow_predictions).where(doomed_shadow)
                n_shadow = int(conn.execute(count).scalar_one())
            n_log = int(conn.execute(sa.select(sa.func.count()).where(doomed)).scalar_one())
            if not dry_run:
                if doomed_shadow is not None:
                    conn.execute(shadow_predictions.delete().where(doomed_shadow))
                conn.execute(predictions.delete().where(doomed))
        return n_log, n_shadow
    finally:
        engine.dispose()
