"""Behind ``mlops-assets run`` (:mod:`mlops_assets.commands.run`): one in-process pass over the whole graph, and
the report it writes.

No daemon is needed: the job executes in this process against the Dagster instance in ``DAGSTER_HOME`` (default
``$MLOPS_HOME/dagster``, SQLite), so the UI shows the run, its materializations and its check results afterwards.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.config import MlopsConfig
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry

# One planned event per asset for a single-run backfill instead of one per partition (Dagster's own switch): it
# halves the event-log writes of a run over hundreds of partitions. A failed run then leaves its partitions
# "missing" rather than "failed" in the UI; the run itself still shows as failed.
os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
# MLflow draws a progress bar for every artifact it reads; the CLI has its own.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# The check metadata a report keeps (the instance keeps all of it).
SUMMARY_METADATA = (
    "measured",
    "threshold",
    "failing_partitions",
    "failing_partition_count",
    "failing_columns",
    "message",
)


@dataclass
class RunOutcome:
    status: str  # ok | blocked | failed
    run_id: str | None
    partitions: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    trained_version: str | None = None
    promoted_version: str | None = None
    first_partition: str | None = None
    last_partition: str | None = None
    materialized: list[str] = field(default_factory=list)
    # The champion that stays because the data and recipe are unchanged (nothing was trained).
    unchanged_champion_version: str | None = None
    # A challenger that passed every gate and awaits a person's approval (approval.required).
    awaiting_approval_version: str | None = None
    # A challenger that passed every gate and now runs in shadow of the champion (rollout.mode: shadow).
    shadow_version: str | None = None
    # Damaged stored files the run moved aside: asset, partition, path, cause, moved_to, rebuilt (bool).
    damaged: list[dict[str, Any]] = field(default_factory=list)
    # The message of a configuration or data-shape error a step raised (see :func:`input_error`), when the run
    # failed on one: the user's to fix, as when the pre-run check finds it (exit 2).
    input_error: str | None = None


# Set once ``execute`` holds its instance: another thread may then open its own on the same storage. Opening one
# while the first creates a fresh SQLite instance stamps its schema twice (alembic: "more than one head").
INSTANCE_READY = threading.Event()


def instance_for(storage: Storage):
    """The Dagster instance in ``storage.dagster_home`` (created on first use; SQLite unless its dagster.yaml says
    otherwise)."""
    import dagster as dg

    storage.dagster_home.mkdir(parents=True, exist_ok=True)
    target = storage.dagster_home / "dagster.yaml"
    if not target.exists():
        # The embedded default instance (the repository's dagster.yaml), so `dagster dev` on this home gets the
        # same run queue and promotion pool as the runs made here.
        bundled = Path(__file__).resolve().parents[1] / "dagster.yaml"
        target.write_text(bundled.read_text() if bundled.is_file() else "telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(storage.dagster_home)
    _fast_sqlite_event_log(storage.dagster_home)
    return dg.DagsterInstance.get()


_TUNED: set[str] = set()
_WAL_SET: set[str] = set()


def _fast_sqlite_event_log(dagster_home: Path) -> None:
    """WAL journaling with ``synchronous=NORMAL`` for the embedded instance's SQLite files under ``dagster_home``.

    A run over hundreds of partitions writes thousands of events, each its own transaction; with the default
    rollback journal every one waits for an fsync. WAL keeps the files consistent after a crash of the process
    (a power cut may lose the newest events). Only files under ``dagster_home`` are touched: never a user's
    SQLite source, never MLflow's store. Production instances are on PostgreSQL. The event log itself keeps its
    connections (:mod:`mlops_assets.defs.embedded_storage`); this covers the run and schedule storages beside it.
    """
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    root = str(dagster_home.resolve())
    if root in _TUNED:
        return
    _TUNED.add(root)

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        if not isinstance(dbapi_conn, sqlite3.Connection):
            return
        files = [row[2] for row in dbapi_conn.execute("PRAGMA database_list") if row[2]]
        if not files or not all(os.path.realpath(f).startswith(root + os.sep) for f in files):
            return
        # The journal mode is stored in the file and persists, so it is set once per file and process; taking
        # it needs a lock, which costs as much as the insert the connection was opened for.
        if not _WAL_SET.issuperset(files):
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            _WAL_SET.update(files)
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")


def _sleep_while_a_step_waits_for_a_slot() -> None:
    """Make Dagster's executors sleep while a step waits for a concurrency slot (the promotion pool) instead of
    spinning at 100% CPU.

    ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns ``min(0, ...)``, which is never
    positive, so the execution loop never sleeps between its checks of the claim (Dagster 1.13). Here it returns the
    time left until the next check is due, as its name says; the checks themselves are unchanged."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    def interval_to_next_pending_claim_check(self) -> float:
        now = time.time()
        due = [
            ready_at - now for key, ready_at in self._pending_timeouts.items() if key in self._pending_claims
        ]
        return max(0.0, min(due)) if due else 0.0

    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check  # type: ignore[method-assign]


def execute(
    cfg: MlopsConfig,
    *,
    config_file: str | None,
    storage: Storage,
    reason: str | None = None,
    partition_keys: tuple[str, str] | None = None,
    selection: list[str] | None = None,
    instance=None,
    force: bool = False,
    log_level: str = "WARNING",
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Materialize the graph (or ``selection``, asset names) over a partition range in this process (as run
    ``run_id`` when given).

    ``log_level``: what Dagster's console logger prints (``CRITICAL``: nothing but a crash of Dagster itself; a
    blocked gate and a failed step are in the outcome, and the full event log stays in the instance).

    Runs found without their process first (killed earlier: see :mod:`mlops_assets.defs.run_liveness`) are marked
    failed and their concurrency slots freed, so a run killed during its promotion does not block this one."""
    import dagster as dg

    # Dagster flags the APIs we rely on (single-run backfills, data versions, dagster-mlflow) as beta on every
    # use, and MLflow announces its schema migrations; a command-line user can act on neither.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

    from mlops_assets.data.partitions import key_window, keys_between
    from mlops_assets.data.sources import source_time_range
    from mlops_assets.defs.factory import add_periods, build_model_defs, period_partitions, run_job_name
    from mlops_assets.defs.model_assets import FORCE_TAG, REASON_TAG, TRAIN_THROUGH_TAG
    from mlops_assets.defs.run_liveness import HOST_TAG, reap_dead_runs

    _sleep_while_a_step_waits_for_a_slot()
    t0 = time.perf_counter()
    defs = build_model_defs(cfg, config_path=config_file)
    INSTANCE_READY.clear()
    instance = instance or instance_for(storage)
    INSTANCE_READY.set()
    reap_dead_runs(instance, found_by=f"mlops-assets (pid {os.getpid()})")
    # The data's own periods (the run reads the source anyway), added as partitions where they are new.
    rng = source_time_range(cfg)
    keys = keys_between(rng.start, rng.end, cfg.partitions.freq)
    if partition_keys is not None:
        first, last = partition_keys
        starts = [key_window(k, cfg.partitions.freq)[0] for k in partition_keys]
        keys = sorted({*keys, *keys_between(starts[0], starts[1], cfg.partitions.freq)})
    else:
        first, last = keys[0], keys[-1]
    add_periods(instance, period_partitions(cfg), keys)
    from mlops_assets.defs.ingestion import RANGE_END, RANGE_START

    run_tags = {
        RANGE_START: first,
        RANGE_END: last,
        TRAIN_THROUGH_TAG: keys[-1],
        HOST_TAG: socket.gethostname(),
        **(tags or {}),
    }
    if reason:
        run_tags[REASON_TAG] = reason
    if force:
        run_tags[FORCE_TAG] = "true"
        run_tags.setdefault(REASON_TAG, "manual")
    if selection is None:
        resolved = defs.resolve_job_def(run_job_name(cfg))
    else:
        # A part of the graph (e.g. the data steps alone, or model_performance): a job of its own for this run.
        from mlops_assets.defs.shadow import without_shadow_check

        job = dg.define_asset_job(
            f"{cfg.model.name}_selection_job",
            selection=without_shadow_check(
                cfg, dg.AssetSelection.assets(*[dg.AssetKey([cfg.model.name, s]) for s in selection])
            ),
            executor_def=dg.in_process_executor,
        )
        resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(job.name)
    # The console logger prints every event (one per partition and asset); the progress bar and the summary
    # say what matters, and the UI keeps the full event log.
    quiet = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    # Dagster's execution engine also warns through Python logging, outside the run's loggers (e.g. a blocking
    # check without a result when training had nothing new to learn): quiet it with the console logger.
    from mlops_assets.steps.repair import ledger_mark, moved_since

    mark = ledger_mark(cfg, storage)
    engine_log = logging.getLogger("dagster._core.execution")
    engine_level = engine_log.level
    if logging.getLevelName(log_level) > logging.WARNING:
        engine_log.setLevel(log_level)
    try:
        result = resolved.execute_in_process(
            instance=instance, tags=run_tags, raise_on_error=False, run_config=quiet, run_id=run_id
        )
    finally:
        engine_log.setLevel(engine_level)
    outcome = RunOutcome(
        status="ok",
        run_id=result.run_id,
        partitions=keys.index(last) - keys.index(first) + 1,
        seconds=time.perf_counter() - t0,
        first_partition=first,
        last_partition=last,
        damaged=[d.to_dict() | {"rebuilt": rebuilt} for d, rebuilt in moved_since(cfg, storage, mark)],
    )
    return read_events(outcome, result.all_events, success=result.success)


def read_events(
    outcome: RunOutcome, events: Iterable[Any], *, success: bool, failure_message: str | None = None
) -> RunOutcome:
    """Fill ``outcome`` from a run's Dagster events (its checks, first step error, materializations, trained and
    promoted versions) and decide its status: ``failed`` on a step error, ``blocked`` when a blocking check failed
    (or stopped a step), ``failed`` when the run did not succeed for another reason (``failure_message``, e.g. the
    run failure event's, or "the run failed"), else ``ok``.

    The one reading of a run's outcome: ``mlops-assets run`` feeds it the events of the run it executed, the
    last-run sensor (:mod:`mlops_assets.defs.last_run_sensor`) those a daemon's or the UI's run left in the event
    log."""
    from mlops_assets.defs.model_assets import UNCHANGED_KEY

    blocked = False
    for event in events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            outcome.checks.append(check_row(event.asset_check_evaluation_data))
        elif event.event_type_value == "STEP_FAILURE":
            err = event.step_failure_data.error
            if err and "DagsterAssetCheckFailedError" in (err.cls_name or ""):
                blocked = True
            elif outcome.error is None:
                outcome.error = f"{event.step_key}: {_user_error(err)}"
                outcome.input_error = input_error(err)
        elif event.event_type_value == "ASSET_OBSERVATION":
            observed = event.asset_observation_data.asset_observation
            if UNCHANGED_KEY in observed.metadata:
                outcome.unchanged_champion_version = _plain(observed.metadata[UNCHANGED_KEY])
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.step_materialization_data.materialization
            name = mat.asset_key.path[-1]
            if name not in outcome.materialized:
                outcome.materialized.append(name)
            if name == "trained_model":
                outcome.trained_version = _plain(mat.metadata.get("version"))
            elif name == "deployed_model" and "shadow_version" in mat.metadata:
                outcome.shadow_version = _plain(mat.metadata["shadow_version"])
            elif name == "deployed_model":
                outcome.promoted_version = _plain(mat.metadata.get("champion_version"))
                outcome.awaiting_approval_version = _plain(mat.metadata.get("awaiting_approval"))
    if outcome.error:
        outcome.status = "failed"
    elif blocked or any(c["blocking"] and not c["passed"] for c in outcome.checks):
        outcome.status = "blocked"
    elif not success:
        outcome.status = "failed"
        outcome.error = failure_message or "the run failed"
    return outcome


def check_row(ev: Any) -> dict[str, Any]:
    """A check evaluation as a report row (asset, check, passed, severity, blocking, description, the summary
    metadata)."""
    return {
        "asset": ev.asset_key.path[-1],
        "check": ev.check_name,
        "passed": bool(ev.passed),
        "severity": ev.severity.value if ev.severity else "ERROR",
        "blocking": bool(ev.blocking),
        "description": getattr(ev, "description", None),
        "metadata": {
            k: _plain(v)
            for k, v in ev.metadata.items()
            if k in SUMMARY_METADATA and _plain(v) not in ([], None)
        },
    }


def _innermost(err):
    """The user code's error inside a step error (Dagster wraps it)."""
    while (
        err is not None
        and err.cause is not None
        and "DagsterExecutionStepExecutionError" in (err.cls_name or "")
    ):
        err = err.cause
    return err


def _user_error(err) -> str:
    """The innermost user-facing message of a step error (Dagster wraps user code errors)."""
    err = _innermost(err)
    if err is None:
        return "unknown error"
    message = err.message.strip().splitlines()[-1] if err.message.strip() else ""
    if err.cls_name == "Failure":
        # An asset's own dg.Failure ("waiting: ...") is the explanation, as written: no class names around it.
        return message.removeprefix("dagster._core.definitions.events.Failure: ")
    # The message may begin with the class's dotted path already: named once.
    if err.cls_name:
        message = re.sub(rf"^[\w.]*\b{re.escape(err.cls_name)}: ", "", message)
    return f"{err.cls_name}: {message}".strip()


def input_error(err) -> str | None:
    """The message of a step error whose class is one of the project's configuration or data-shape errors
    (:class:`~mlops_assets.config.ConfigError`, which includes a source's
    :class:`~mlops_assets.data.sources.SourceError`, and
    :class:`~mlops_assets.features.code_version.FeatureDefinitionError`); None for anything else, a source's
    database that cannot be reached or used (:class:`~mlops_assets.data.sources.SourceUnavailableError`) among it.

    The class is looked up by the dotted path the serialized error begins with (``module.Class: message``), so only
    a class of this project, of one of those kinds, counts; the message text itself decides nothing."""
    import importlib

    from mlops_assets.config import ConfigError
    from mlops_assets.data.sources import SourceUnavailableError
    from mlops_assets.features.code_version import FeatureDefinitionError

    err = _innermost(err)
    if err is None or not err.cls_name:
        return None
    match = re.match(rf"(mlops_assets(?:\.\w+)*)\.{re.escape(err.cls_name)}: ", err.message)
    if match is None:
        return None
    try:
        cls = getattr(importlib.import_module(match.group(1)), err.cls_name, None)
    except ImportError:
        return None
    if not (isinstance(cls, type) and issubclass(cls, ConfigError | FeatureDefinitionError)):
        return None
    if issubclass(cls, SourceUnavailableError):  # the source's database down or locked: infrastructure
        return None
    lines = [line.strip() for line in err.message[match.end() :].splitlines()]
    return " ".join(line for line in lines if line) or None


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def build_report(cfg: MlopsConfig, outcome: RunOutcome, registry: ModelRegistry) -> dict[str, Any]:
    """The report JSON of INTERFACE.md, read from ``registry`` (``cfg``'s model's)."""
    from mlops_assets.registry.tags import champion_fit

    champ = registry.champion()
    history = registry.history()
    retrains = []
    if outcome.trained_version is not None:
        reason = next((d.reason for d in history if d.version == outcome.promoted_version), None)
        retrains.append(
            {
                "partition": outcome.last_partition,
                "reason": reason or ("initial" if len(history) <= 1 else "manual"),
                "version": outcome.trained_version,
                "promoted": outcome.promoted_version is not None,
            }
        )
    return {
        "status": outcome.status,
        "partitions": outcome.partitions,
        "run_id": outcome.run_id,
        "seconds": round(outcome.seconds, 2),
        "error": outcome.error,
        "checks": outcome.checks,
        "champion": (
            {
                "model_name": champ.model_name,
                "version": champ.version,
                "run_id": champ.run_id,
                "metrics": _champion_metrics(champ.metrics),
                **champion_fit(champ.tags),
            }
            if champ
            else None
        ),
        "deployments": [
            {"version": d.version, "at": d.deployed_at, "reason": d.reason, "run_id": d.run_id}
            for d in history
        ],
        "retrains": retrains,
        "unchanged_champion_version": outcome.unchanged_champion_version,
        "awaiting_approval": [a.version for a in registry.awaiting_approval()],
        "shadow": (lambda s: s.to_dict() if s is not None else None)(registry.active_shadow()),
        "damaged": outcome.damaged,
    }


def _champion_metrics(metrics: dict[str, float]) -> dict[str, float]:
    out = {k.removeprefix("holdout_"): v for k, v in metrics.items() if k.startswith("holdout_")}
    return out or dict(metrics)
