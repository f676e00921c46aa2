"""``mlops-assets run``: one in-process pass over the whole graph, and the report it writes.

No daemon is needed: the job executes in this process against the Dagster instance in ``DAGSTER_HOME`` (default
``$MLOPS_HOME/dagster``, SQLite), so the UI shows the run, its materializations and its check results afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_assets.config import MlopsConfig, config_path, load_config
from mlops_assets.settings import Storage, storage_from_env

# One planned event per asset for a single-run backfill instead of one per partition (Dagster's own switch): it
# halves the event-log writes of a run over hundreds of partitions. A failed run then leaves its partitions
# "missing" rather than "failed" in the UI; the run itself still shows as failed.
os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
# MLflow draws a progress bar for every artifact it reads; the CLI has its own.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

CHAIN = ("raw_data", "validated_data", "features", "trained_model", "deployed_model")
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


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
    last_partition: str | None = None
    materialized: list[str] = field(default_factory=list)


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
    connections (:mod:`mlops_assets.embedded_storage`); this covers the run and schedule storages beside it.
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


def execute(
    cfg: MlopsConfig,
    *,
    config_file: str | None,
    storage: Storage,
    reason: str | None = None,
    partition_keys: tuple[str, str] | None = None,
    selection: list[str] | None = None,
    instance=None,
) -> RunOutcome:
    """Materialize the graph (or ``selection``, asset names) over a partition range in this process."""
    import dagster as dg

    # Dagster flags the APIs we rely on (single-run backfills, data versions, dagster-mlflow) as beta on every
    # use, and MLflow announces its schema migrations; a command-line user can act on neither.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

    from mlops_assets.defs.factory import build_model_defs
    from mlops_assets.defs.model_assets import REASON_TAG

    t0 = time.perf_counter()
    defs = build_model_defs(cfg, config_path=config_file)
    instance = instance or instance_for(storage)
    graph = defs.resolve_asset_graph()
    keys = graph.get(dg.AssetKey([cfg.model.name, "raw_data"])).partitions_def.get_partition_keys()
    first, last = partition_keys or (keys[0], keys[-1])
    tags = {RANGE_START: first, RANGE_END: last}
    if reason:
        tags[REASON_TAG] = reason
    # `run` is the main chain; model_performance follows the prediction service's feedback, not the data.
    asset_selection = [dg.AssetKey([cfg.model.name, s]) for s in (selection or CHAIN)]
    job = dg.define_asset_job("mlops_run_job", selection=asset_selection, executor_def=dg.in_process_executor)
    resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("mlops_run_job")
    # The console logger prints every event (one per partition and asset); the progress bar and the summary
    # say what matters, and the UI keeps the full event log.
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = resolved.execute_in_process(instance=instance, tags=tags, raise_on_error=False, run_config=quiet)
    outcome = RunOutcome(
        status="ok",
        run_id=result.run_id,
        partitions=keys.index(last) - keys.index(first) + 1,
        seconds=time.perf_counter() - t0,
        last_partition=last,
    )
    blocked = False
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            outcome.checks.append(
                {
                    "asset": ev.asset_key.path[-1],
                    "check": ev.check_name,
                    "passed": bool(ev.passed),
                    "severity": ev.severity.value if ev.severity else "ERROR",
                    "blocking": bool(ev.blocking),
                    "metadata": {
                        k: _plain(v)
                        for k, v in ev.metadata.items()
                        if k in ("measured", "threshold", "failing_partitions", "failing_columns", "message")
                        and _plain(v) not in ([], None)
                    },
                }
            )
        elif event.event_type_value == "STEP_FAILURE":
            err = event.event_specific_data.error
            if err and "DagsterAssetCheckFailedError" in (err.cls_name or ""):
                blocked = True
            elif outcome.error is None:
                outcome.error = f"{event.step_key}: {_user_error(err)}"
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            name = mat.asset_key.path[-1]
            if name not in outcome.materialized:
                outcome.materialized.append(name)
            if name == "trained_model":
                outcome.trained_version = _plain(mat.metadata.get("version"))
            elif name == "deployed_model":
                outcome.promoted_version = _plain(mat.metadata.get("champion_version"))
    if outcome.error:
        outcome.status = "failed"
    elif blocked or any(c["blocking"] and not c["passed"] for c in outcome.checks):
        outcome.status = "blocked"
    elif not result.success:
        outcome.status = "failed"
        outcome.error = outcome.error or "the run failed"
    return outcome


def _user_error(err) -> str:
    """The innermost user-facing message of a step error (Dagster wraps user code errors)."""
    while (
        err is not None
        and err.cause is not None
        and "DagsterExecutionStepExecutionError" in (err.cls_name or "")
    ):
        err = err.cause
    if err is None:
        return "unknown error"
    return f"{err.cls_name}: {err.message.strip().splitlines()[-1] if err.message.strip() else ''}".strip()


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def build_report(cfg: MlopsConfig, outcome: RunOutcome) -> dict[str, Any]:
    """The report JSON of INTERFACE.md."""
    from mlops_assets.registry.model_registry import ModelRegistry

    registry = ModelRegistry(cfg.model.name)
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
                "metrics": _champion_metrics(champ.metrics),
            }
            if champ
            else None
        ),
        "deployments": [
            {"version": d.version, "at": d.deployed_at, "reason": d.reason, "run_id": d.run_id}
            for d in history
        ],
        "retrains": retrains,
    }


def _champion_metrics(metrics: dict[str, float]) -> dict[str, float]:
    out = {k.removeprefix("holdout_"): v for k, v in metrics.items() if k.startswith("holdout_")}
    return out or dict(metrics)


class _Progress:
    """A progress bar over the graph's steps, fed by the steps themselves (see :mod:`mlops_assets.progress`)."""

    STEPS = ("raw_data", "validated_data", "features", "trained_model", "deployed_model")

    def __init__(self, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=len(self.STEPS), unit="step", disable=not enabled, file=sys.stderr)
        self.seen: list[str] = []

    def __call__(self, name: str, detail: str) -> None:
        if name not in self.seen:
            if self.seen:
                self.bar.update(1)
            self.seen.append(name)
        self.bar.set_description(f"{name}: {detail}" if detail else name)

    def close(self, outcome: RunOutcome) -> None:
        if outcome.status == "ok" and self.seen:
            self.bar.update(1)
        self.bar.close()


def run_command(args) -> int:
    from mlops_assets import progress

    cfg = load_config(args.config)
    storage = storage_from_env().ensure()
    bar = _Progress(enabled=not args.no_progress)
    progress.install(bar)
    try:
        outcome = execute(cfg, config_file=str(config_path(args.config)), storage=storage)
    finally:
        progress.install(None)
    bar.close(outcome)
    report = build_report(cfg, outcome)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    _print_summary(report)
    return 1 if outcome.status == "failed" else 0


def _print_summary(report: dict[str, Any]) -> None:
    failed = [c for c in report["checks"] if not c["passed"]]
    print(f"status: {report['status']}  ({report['partitions']} partitions, {report['seconds']} s)")
    if report["error"]:
        print(f"error: {report['error']}")
    print(f"checks: {len(report['checks']) - len(failed)} passed, {len(failed)} failed")
    for c in failed:
        print(f"  FAILED {c['asset']}.{c['check']} {c['metadata']}")
    champ = report["champion"]
    if champ:
        m = champ["metrics"]
        shown = ", ".join(
            f"{k}={m[k]:.3f}" for k in ("roc_auc", "accuracy", "f1") if isinstance(m.get(k), float)
        )
        print(f"champion: {champ['model_name']} version {champ['version']} ({shown})")
    else:
        print("champion: none")
