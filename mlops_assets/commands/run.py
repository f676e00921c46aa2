"""``mlops-assets run [--report out.json] [--no-progress]``: one in-process pass over the whole graph, gate,
deploy; a progress bar while it runs and a summary after.

The work is :func:`mlops_assets.runner.execute` and :func:`mlops_assets.runner.build_report`; this module only
drives them, presents the result, and answers SIGINT/SIGTERM while the run executes
(:func:`run_answering_signals`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from mlops_assets.commands.context import load_context, open_registry
from mlops_assets.config import ConfigError, MlopsConfig
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.runner import RunOutcome


class Progress:
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


class PlainProgress:
    """Progress as plain lines (``run: 12 s trained_model: release gates``), one per step the graph reports: for
    logs and CI, where a redrawn bar shows nothing until it ends."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.t0 = time.perf_counter()

    def __call__(self, name: str, detail: str) -> None:
        elapsed = time.perf_counter() - self.t0
        self.stream.write(f"run: {elapsed:4.0f} s  {name}" + (f": {detail}" if detail else "") + "\n")
        self.stream.flush()

    def close(self, outcome: RunOutcome) -> None:
        self.stream.write(f"run: {time.perf_counter() - self.t0:4.0f} s  done ({outcome.status})\n")
        self.stream.flush()


@dataclass(frozen=True)
class RunResult:
    """What ``run`` did (``outcome``) and the report JSON built from it (INTERFACE.md, "Report JSON")."""

    outcome: RunOutcome
    report: dict[str, Any]


def run(
    cfg: MlopsConfig,
    storage: Storage,
    *,
    config_file: str | Path,
    progress: bool | None = False,
    force: bool = False,
    verbose: bool = False,
    run_id: str | None = None,
) -> RunResult:
    """Check the source, materialize the graph over all partitions in this process (as Dagster run ``run_id``
    when given), then build the report from the registry and record the outcome for ``status``.

    The source is checked before anything is stored: a source that cannot be ingested (or another dataset under
    this model name) raises :class:`~mlops_assets.data.sources.SourceError` and leaves the storage as it was. A
    blocking gate is a result (``status == "blocked"``), not an exception. On unchanged data and recipe nothing
    is trained or promoted unless ``force``. ``progress``: a bar (True), plain lines (None), nothing (False);
    ``verbose``: Dagster's own log on stderr."""
    from mlops_assets.data.preflight import check_source

    check_source(cfg, storage.home, config_file)

    import uuid

    from mlops_assets import progress as step_progress
    from mlops_assets.defs.factory import run_job_name
    from mlops_assets.defs.last_run_sensor import RECORDED_BY_TAG
    from mlops_assets.last_run import RUN_COMMAND, record_last_run
    from mlops_assets.runner import build_report, execute

    run_id = run_id or str(uuid.uuid4())

    bar: Progress | PlainProgress = (
        PlainProgress(sys.stderr) if progress is None else Progress(enabled=progress)
    )
    step_progress.install(bar)
    try:
        outcome = execute(
            cfg,
            config_file=str(config_file),
            storage=storage.ensure(),
            force=force,
            log_level="INFO" if verbose else "CRITICAL",
            run_id=run_id,
            # Recorded for `status` below: the last-run sensors leave this run (and only this one) alone.
            tags={RECORDED_BY_TAG: run_id},
        )
    finally:
        step_progress.install(None)
    bar.close(outcome)
    registry = open_registry(cfg, storage)
    alert_run(cfg, registry, outcome)
    report = build_report(cfg, outcome, registry=registry)
    first, last = outcome.first_partition, outcome.last_partition
    record_last_run(
        storage.home,
        cfg.model.name,
        report,
        job=run_job_name(cfg),
        trigger=RUN_COMMAND,
        reason="manual" if force else None,  # the reason tag execute gives a forced run
        partition_range=(first, last) if first and last else None,
    )
    return RunResult(outcome, report)


def alert_run(cfg: MlopsConfig, registry: ModelRegistry, outcome: RunOutcome) -> None:
    """The alerts of an in-process run (no sensor sees it unless a daemon runs): failed gates and drift, cleared
    checks, and a failed run. Promotions were alerted by the registry when the alias moved."""
    from mlops_assets.alerts.checks import RELEASE_PREFIX, alert_on_checks, run_failed_event
    from mlops_assets.defs.factory import run_job_name

    alerter = registry.alerter
    if alerter is None:
        return
    rows = [
        c | {"version": outcome.trained_version} if c["check"].startswith(RELEASE_PREFIX) else c
        for c in outcome.checks
    ]
    alert_on_checks(alerter, cfg.model.name, rows, outcome.run_id)  # a `run` is never a triggered retrain
    job = run_job_name(cfg)
    if outcome.status == "failed":
        alerter.notify(run_failed_event(cfg.model.name, job, outcome.run_id, outcome.error))
    else:
        alerter.resolve(
            cfg.model.name, f"run_failed:{job}", f"{cfg.model.name}: {job} ran again", run_id=outcome.run_id
        )


def print_summary(report: dict[str, Any], where: list[tuple[str, str]] | None = None) -> None:
    """Status, what blocked or failed (one line a check), the champion, then where everything went and what to
    run next: for a person at a terminal."""
    from mlops_assets.last_run import describe_check

    failed = [c for c in report["checks"] if not c["passed"]]
    blocking = [c for c in failed if c["blocking"]]
    print(f"status: {report['status']}  ({report['partitions']} partitions, {report['seconds']} s)")
    if report["error"]:
        print(f"error: {report['error']}")
        print("  (--verbose prints Dagster's log; every event of the run is in the Dagster UI)")
    print(f"checks: {len(report['checks']) - len(failed)} passed, {len(failed)} failed")
    for d in report.get("damaged") or []:
        print(f"  {_damaged_line(d)}")
    for c in blocking:
        print(f"  BLOCKED {describe_check(c)}")
    for c in failed:
        if not c["blocking"]:
            print(f"  {c['severity']} (not blocking) {describe_check(c)}")
    if report.get("unchanged_champion_version"):
        print(
            f"training: unchanged data and recipe since champion version {report['unchanged_champion_version']}"
            ": nothing retrained (--force retrains on purpose)"
        )
    champ = report["champion"]
    if champ:
        m = champ["metrics"]
        shown = ", ".join(
            f"{k}={m[k]:.3f}" for k in ("roc_auc", "accuracy", "f1") if isinstance(m.get(k), float)
        )
        print(f"champion: {champ['model_name']} version {champ['version']} ({shown})")
    else:
        print("champion: none")
    shadow = report.get("shadow")
    if shadow:
        print(
            f"in shadow: version {shadow['version']} beside champion {shadow['champion_version']}; promoted when "
            "its shadow comparison passes (mlops-assets status)"
        )
    for title, text in where or []:
        print(f"{title}:" if not text else f"  {title:<12} {text}")


def _damaged_line(d: dict[str, Any]) -> str:
    from mlops_assets.steps.repair import DamagedFile, warning

    moved_to = Path(d["moved_to"]) if d.get("moved_to") else None
    damaged = DamagedFile(d["asset"], d["partition"], Path(d["path"]), d["cause"], moved_to)
    return warning(damaged, rebuilt=bool(d["rebuilt"]))


def where_things_are(
    cfg: MlopsConfig, storage: Storage, result: RunResult, *, report_path: str | None, config_file: Path
) -> list[tuple[str, str]]:
    """Where the run's results went and the commands that open them, as (title, text) lines: a title with empty
    text starts a group."""
    from mlops_assets.storage import sqlite_file

    report = result.report
    home = storage.home
    lines: list[tuple[str, str]] = [("where things are", "")]
    if report_path:
        lines.append(("report", str(Path(report_path).resolve())))
    lines.append(("state", f"{home} (MLOPS_HOME)"))
    blocked = {c["asset"] for c in report["checks"] if c["blocking"] and not c["passed"]}
    if "raw_data" in blocked:
        lines.append(
            (
                "blocked rows",
                f"{home / cfg.model.name / 'raw_data'} (each partition as read, with its verdict in "
                "__blocked__); samples of failing rows: the raw_data checks in the Dagster UI",
            )
        )
    if "trained_model" in blocked:
        lines.append(("gate details", "the trained_model checks in the Dagster UI; the model card in MLflow"))
    # The environment a later command needs to find this run's config and state.
    config = "" if config_file.resolve() == _bundled_config() else f"MLOPS_CONFIG={config_file.resolve()} "
    default_home = home == Path(".mlops").absolute()
    if not default_home:
        config += f"MLOPS_HOME={home} "
    if default_home and Path("Makefile").is_file():
        dagster = f"{config}make dev  (dagster dev on this state, http://127.0.0.1:3000)"
    else:
        dagster = (
            f"{config}DAGSTER_HOME={storage.dagster_home} dagster dev -m mlops_assets.definitions  "
            "(http://127.0.0.1:3000)"
        )
    lines.append(("Dagster UI", dagster))
    tracking = storage.mlflow_tracking_uri
    db = sqlite_file(tracking)
    shown = storage.mlflow_tracking_uri if db is None else f"sqlite:///{db.resolve()}"
    lines.append(
        ("MLflow UI", f"mlflow ui --backend-store-uri {shown}  (experiment mlops_assets/{cfg.model.name})")
    )
    card = _model_card(cfg, storage, report)
    if card:
        lines.append(("model card", card))
    plots = home / cfg.model.name / "monitoring" / "plots"
    if plots.is_dir() and any(plots.iterdir()):
        lines.append(("drift plots", str(plots)))
    lines.append(("next", ""))
    if report["champion"]:
        lines.append(("serve", f"{config}mlops-assets serve   (the champion over HTTP on 127.0.0.1:8000)"))
    lines.append(("status", f"{config}mlops-assets status  (champion, history, this run's gates)"))
    return lines


def _bundled_config() -> Path:
    from mlops_assets.config import BUNDLED_CONFIG

    return BUNDLED_CONFIG.resolve()


def _model_card(cfg: MlopsConfig, storage: Storage, report: dict[str, Any]) -> str | None:
    """The champion's model card as a local file when the artifacts are local, else its artifact URI."""
    champ = report["champion"]
    if not champ or not champ.get("run_id"):
        return None
    registry = open_registry(cfg, storage)
    uri = registry.client.get_run(champ["run_id"]).info.artifact_uri
    target = f"{uri.rstrip('/')}/model_cards/v{champ['version']}.md"
    if target.startswith("file://"):
        from urllib.parse import unquote, urlparse

        path = Path(unquote(urlparse(target).path))
        return str(path) if path.exists() else None
    return target


# How often the waiting process looks for runs killed since it started (one holding the promotion slot it waits for).
REAP_INTERVAL_SECONDS = 3.0
# How long a stop waits for a champion move in progress (a few database writes) to be recorded.
PROMOTION_GRACE_SECONDS = 120.0


def run_answering_signals(
    cfg: MlopsConfig,
    storage: Storage,
    *,
    config_file: str | Path,
    progress: bool | None,
    force: bool,
    verbose: bool = False,
) -> RunResult:
    """:func:`run`, stopped promptly by SIGINT or SIGTERM whatever it is doing.

    Dagster defers interrupts to points between steps, and the in-process executor has none while a step waits
    for a concurrency slot: such a run ignored SIGINT and SIGTERM for as long as the slot stayed taken. Here the run
    executes in a worker thread (where Dagster installs no handlers) and this thread answers the signal: it lets a
    champion move in progress finish, records the run as canceled, frees its concurrency slots, ends its MLflow run
    and exits with 128 + the signal number. While waiting, it also marks runs killed since this one started as
    failed and frees their slots (:func:`~mlops_assets.defs.run_liveness.reap_dead_runs`)."""
    import signal
    import threading
    import time
    import uuid

    run_id = str(uuid.uuid4())
    received: list[int] = []
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = run(
                cfg,
                storage,
                config_file=config_file,
                progress=progress,
                force=force,
                verbose=verbose,
                run_id=run_id,
            )
        except BaseException as err:  # handed to the main thread, raised there
            box["error"] = err

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _frame: received.append(signum)) for s in stop_signals}
    worker = threading.Thread(target=work, name="mlops-assets-run", daemon=True)
    try:
        worker.start()
        watch = None
        next_reap = time.monotonic() + REAP_INTERVAL_SECONDS
        while worker.is_alive():
            worker.join(0.2)
            if received:
                _stop(received[0], run_id, cfg, storage)
            if worker.is_alive() and time.monotonic() >= next_reap:
                # Only once the run holds its instance: before, the source is still being checked (bad input
                # ends the run without Dagster ever being imported) or the instance is being created.
                watch = watch or _instance(storage)
                if watch is not None:
                    from mlops_assets.defs.run_liveness import reap_dead_runs

                    reap_dead_runs(watch, found_by=f"mlops-assets run (pid {os.getpid()})")
                next_reap = time.monotonic() + REAP_INTERVAL_SECONDS
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if "error" in box:
        raise box["error"]
    return box["result"]


def _instance(storage: Storage):
    """A Dagster instance of this thread's own on ``storage`` (the worker thread keeps its connections); None
    until the run holds its own (two threads creating a fresh instance at once would stamp its schema twice)."""
    from mlops_assets.runner import INSTANCE_READY

    if not INSTANCE_READY.is_set() or not storage.dagster_home.joinpath("dagster.yaml").is_file():
        return None
    import dagster as dg

    return dg.DagsterInstance.from_config(str(storage.dagster_home))


def _stop(signum: int, run_id: str, cfg: MlopsConfig, storage: Storage) -> NoReturn:
    """Record run ``run_id`` as canceled, free its slots, end its MLflow run and exit with 128 + ``signum``."""
    import signal

    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    from mlops_assets.steps.promote import PROMOTING

    name = signal.Signals(signum).name
    print(f"\nmlops-assets run: {name} received, stopping run {run_id}", file=sys.stderr, flush=True)
    try:
        # Never exit between moving the champion's aliases and recording the move: wait for a promotion underway.
        PROMOTING.acquire(timeout=PROMOTION_GRACE_SECONDS)
        done = []
        instance = _instance(storage)
        dagster_run = instance.get_run_by_id(run_id) if instance is not None else None
        if instance is not None and dagster_run is not None:
            if dagster_run.status not in FINISHED_STATUSES:
                instance.report_run_canceled(
                    dagster_run, message=f"stopped by {name} (mlops-assets run, pid {os.getpid()})"
                )
                done.append("recorded as canceled")
            if instance.event_log_storage.supports_global_concurrency_limits:
                _hold_back_claims(instance.event_log_storage)
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)
                done.append("its concurrency slots freed")
        if "mlflow" in sys.modules:
            done += _end_mlflow_runs(cfg, storage, run_id)
        champion = open_registry(cfg, storage, light=True).aliases().get("champion")
        print(
            f"mlops-assets run: run {run_id} stopped by {name}"
            + (f" ({', '.join(done)})" if done else " before it started")
            + f"; champion: {'version ' + champion if champion else 'none'}",
            file=sys.stderr,
            flush=True,
        )
    except Exception as err:  # stopping anyway: say what could not be cleaned up
        print(f"mlops-assets run: stopping run {run_id} incompletely: {err}", file=sys.stderr, flush=True)
    finally:
        sys.stdout.flush()
        # The worker thread cannot be stopped from outside; what it shares with the stores is recorded above.
        os._exit(128 + signum)


def _hold_back_claims(storage: Any) -> None:
    """Keep the worker thread from claiming (or queueing for) a concurrency slot again before the process exits: a
    step waiting for a slot asks again every few seconds, and would queue the canceled run anew right after its
    slots were freed. The storage class is patched for this process only, which is about to exit; a call already
    under way gets a moment to finish first."""
    import threading
    import time

    def wait_for_exit(*_args: Any, **_kwargs: Any) -> None:
        threading.Event().wait()

    for method in ("claim_concurrency_slot", "check_concurrency_claim"):
        setattr(type(storage), method, wait_for_exit)
    time.sleep(0.5)


def _end_mlflow_runs(cfg: MlopsConfig, storage: Storage, run_id: str) -> list[str]:
    """End the MLflow runs dagster-mlflow opened for Dagster run ``run_id`` as KILLED (left RUNNING otherwise)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=storage.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(open_registry(cfg, storage).experiment_name)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.dagster_run_id = '{run_id}' and attributes.status = 'RUNNING'"
    )
    for r in runs:
        client.set_terminated(r.info.run_id, status="KILLED")
    return [f"MLflow run {r.info.run_id} ended as KILLED" for r in runs]


def main(args: argparse.Namespace) -> int:
    """Exit 0 when the pipeline ran (``ok`` or ``blocked``), 1 when it failed, 128 + N when stopped by signal N;
    a configuration or data-shape error, found before the run or by a step, raises :class:`ConfigError` (exit 2)."""
    ctx = load_context(args.config)
    # A bar on a terminal; plain lines where the output goes to a log (CI) and a bar would show nothing.
    progress = False if args.no_progress else (True if sys.stderr.isatty() and sys.stdout.isatty() else None)
    result = run_answering_signals(
        ctx.cfg,
        ctx.storage,
        config_file=ctx.config_file,
        progress=progress,
        force=getattr(args, "force", False),
        verbose=getattr(args, "verbose", False),
    )
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(result.report, indent=2, default=str))
    if result.outcome.status == "failed" and result.outcome.input_error:
        # A configuration or data-shape error found inside the graph (past the rows the pre-run check reads): the
        # one line and exit 2 of the pre-run check; the run is recorded failed in Dagster and for `status`.
        raise ConfigError(result.outcome.input_error)
    where = where_things_are(
        ctx.cfg, ctx.storage, result, report_path=args.report, config_file=ctx.config_file
    )
    print_summary(result.report, where)
    return 1 if result.outcome.status == "failed" else 0
