"""The living loop, end to end, under the real Dagster daemon: new data in, a fresh champion out, nobody typing.

A source (a folder of monthly CSV files, or a PostgreSQL table) starts with the bundled rainfall data from 1978 to
September 1981 (the table: to November); a code server and ``dagster-daemon`` run on PostgreSQL (deploy/dagster.yaml), and ``mlops-assets
serve`` answers on the champion. Then one month arrives at a time, each only after the previous one was ingested,
through the early-1980s drift (December 1981: the dew point loses its seasonal cycle). The new-data sensor ingests
each month once, the drift check flags the drifted months, the drift sensor retrains through the gates, and the
running service answers with the new champion. A corrupt month in the middle is blocked by raw_data's gate and the
loop goes on with the next good month.

The drift retrain must pass the release gates: they judge the recipe by a rolling-origin backtest over the holdout,
each fold predicted by the recipe fitted right before it, and judge a floor the old champion misses too by beating
that champion on the same unseen rows (``gates.floors.champion_below_floor``).

The helpers (``LoopConfig``, ``Loop``) are shared with benchmarks/bench_loop.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from mlops_assets.config import MlopsConfig
from mlops_assets.defs.factory import ingest_job_name, run_job_name
from mlops_assets.defs.ingestion import RANGE_END, RANGE_START
from mlops_assets.defs.model_assets import REASON_TAG
from mlops_assets.defs.retraining import retrain_job_name, sensor_name
from mlops_assets.steps.train import TAG_TRAINED_WINDOW
from mlops_assets_tests.conftest import write_config
from mlops_assets_tests.test_production_stack import (  # noqa: F401 - the `production` fixture
    BIN,
    Stack,
    free_port,
    production_fixture,
    wait_for,
)

DATA_ASSETS = ("raw_data", "validated_data", "features")
FIRST, INITIAL_END = "1978-01", "1981-09"
DRIFT = "1981-12"  # the first month of the early-1980s drift in the bundled data
IN_FLIGHT = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
}


def month_rows(rainfall: pd.DataFrame, first: str, last: str) -> pd.DataFrame:
    """The rainfall rows of months ``first``..``last`` (inclusive), dates as ISO day strings."""
    month = rainfall["date"].dt.strftime("%Y-%m")
    part = rainfall[(month >= first) & (month <= last)]
    return part.assign(date=part["date"].dt.strftime("%Y-%m-%d"))


def write_month(folder: Path, rainfall: pd.DataFrame, month: str, mutate=None) -> Path:
    """One month's file in ``folder``, written aside and renamed in: the sensor never sees half a file."""
    rows = month_rows(rainfall, month, month)
    if mutate is not None:
        rows = mutate(rows)
    tmp = folder / f".{month}.csv.tmp"
    rows.to_csv(tmp, index=False)
    return tmp.rename(folder / f"{month}.csv")


def loop_config(folder: Path, dataset: dict, *, name: str = "loop", fast: bool = True, **sections) -> Path:
    """The bundled data's features and training window (three years) over ``dataset``; with ``fast`` the sensors
    look every few seconds (the defaults are for users: 15 s for new data and drift, 60 s for performance).
    A retrain minutes after the first model is what this loop is about, so storm control's wall-clock cooldown is
    off; its cap and the failed-challenger rule stay."""
    bundled = yaml.safe_load(
        resources.files("mlops_assets").joinpath("default_config/mlops.yaml").read_text()
    )
    cfg: dict = {
        "dataset": {"timestamp_column": "date", "label_column": "rain", "positive_label": 1, **dataset},
        "partitions": {"freq": "month"},
        "model": {"name": name, "train_window_partitions": bundled["model"]["train_window_partitions"]},
        "features": bundled["features"],
        "retraining": {"cooldown_days": 0},
        "gates": {
            # A loaded 2-core machine: a healthy model's p95 can exceed the production default (see conftest).
            "latency": {"p95_single_row_ms": 2000, "batch_1000_rows_ms": 20000},
        },
    }
    if fast:
        cfg["ingestion"] = {"interval_seconds": 5}
        cfg["retraining"] |= {"sensor_interval_seconds": 5, "performance_interval_seconds": 5}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return write_config(folder / f"{name}.yaml", cfg)


@dataclass
class Loop:
    """Watches the daemon's work on one model from outside: runs, ticks, materializations, the registry."""

    cfg: MlopsConfig
    instance: dg.DagsterInstance
    stack: Stack
    # month -> the data run that ingested it
    ingested: dict[str, dg.DagsterRun] = field(default_factory=dict)

    def runs(self, job: str) -> list[dg.DagsterRun]:
        return list(reversed(self.instance.get_runs(dg.RunsFilter(job_name=job))))  # oldest first

    def data_runs(self) -> list[dg.DagsterRun]:
        return sorted(
            self.runs(run_job_name(self.cfg)) + self.runs(ingest_job_name(self.cfg)),
            key=lambda r: self.instance.get_run_record_by_id(r.run_id).create_timestamp,
        )

    def run_covering(self, month: str) -> dg.DagsterRun | None:
        for run in self.data_runs():
            if run.tags.get(RANGE_START, "~") <= month <= run.tags.get(RANGE_END, ""):
                return run
        return None

    def wait_ingested(self, month: str, timeout: float = 120) -> dg.DagsterRun:
        """The data run over ``month`` (launched by the new-data sensor), once finished."""
        run = wait_for(lambda: self.run_covering(month), timeout, f"a data run over {month}", interval=0.5)
        run = self.stack.wait_run(self.instance, run.run_id, timeout=timeout)
        self.ingested[month] = run
        return run

    def sensor_ticked_after(self, trigger: str, after: float) -> bool:
        """Whether the retraining ``trigger`` sensor finished a tick that started after ``after`` (epoch)."""
        name = sensor_name(self.cfg, trigger)
        for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.name != name:
                continue
            ticks = self.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
            if any(t.timestamp > after and t.status != TickStatus.STARTED for t in ticks):
                return True
        return False

    def settle(self, after_run: dg.DagsterRun, timeout: float = 150) -> list[dg.DagsterRun]:
        """Wait until the drift and performance sensors have looked at what ``after_run`` produced and any
        retrain they requested has finished; returns the retrain runs requested since ``after_run`` was."""
        record = self.instance.get_run_record_by_id(after_run.run_id)
        for trigger in ("drift", "performance"):
            wait_for(
                lambda t=trigger: self.sensor_ticked_after(t, record.end_time),
                timeout,
                f"the {trigger} sensor's first tick after run {after_run.run_id}",
                interval=0.5,
            )
        # The drift check writes its result before its run ends: a retrain may be requested while it still runs.
        since = record.create_timestamp
        return [
            self.stack.wait_run(self.instance, run.run_id, timeout=timeout)
            for run in self.runs(retrain_job_name(self.cfg))
            if self.instance.get_run_record_by_id(run.run_id).create_timestamp > since
        ]

    def materializations(self, asset: str, month: str) -> int:
        key = dg.AssetKey([self.cfg.model.name, asset])
        return len(
            self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[month]), limit=100
            ).records
        )

    def failed_checks(self, run: dg.DagsterRun, asset: str) -> list[str]:
        key = dg.AssetKey([self.cfg.model.name, asset])
        out = []
        for entry in self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            if evaluation.asset_key == key and not evaluation.passed:
                out.append(evaluation.check_name)
        return out


@contextlib.contextmanager
def serving(config: Path, env: dict[str, str], workdir: Path) -> Iterator[Callable[..., dict]]:
    """``mlops-assets serve`` as a subprocess on a free port; yields ``call(path, body=None) -> JSON``."""
    port = free_port()
    log = open(workdir / "serve.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(BIN / "mlops-assets"),
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--insecure-local",
        ],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def call(path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def up():
        assert proc.poll() is None, (workdir / "serve.log").read_text()[-4000:]
        with contextlib.suppress(OSError):
            return call("/health")
        return None

    try:
        wait_for(up, 90, "mlops-assets serve")
        yield call
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def corrupt_visibility(rows: pd.DataFrame) -> pd.DataFrame:
    """A month whose visibility sensor reported garbage all month (999999999 is no real reading)."""
    return rows.assign(visibility=999999999.0)


def next_month(key: str) -> str:
    return (pd.Period(key, "M") + 1).strftime("%Y-%m")


def drive(
    loop: Loop, arrive: Callable[[str], None], months: list[str], corrupt: str | None = None
) -> dict[str, list[dg.DagsterRun]]:
    """Add each month (``arrive``), wait for its ingestion and for the retraining sensors to settle, until a drift
    retrain has happened; returns the retrain runs that finished after each month."""
    retrains: dict[str, list[dg.DagsterRun]] = {}
    for month in months:
        arrive(month)
        run = loop.wait_ingested(month)
        if month == corrupt:
            # Blocked by the data contract: the run fails on the gate; nothing downstream for this month.
            assert run.status == dg.DagsterRunStatus.FAILURE, month
            assert loop.failed_checks(run, "raw_data"), loop.stack.log("daemon")
        else:
            assert run.status == dg.DagsterRunStatus.SUCCESS, (month, loop.stack.log("daemon"))
        retrains[month] = loop.settle(run)
        if any(r.tags.get(REASON_TAG) == "drift" for r in retrains[month]):
            break
    return retrains


def assert_loop(
    loop: Loop,
    registry,
    call: Callable[..., dict],
    retrains: dict[str, list[dg.DagsterRun]],
    rainfall: pd.DataFrame,
    corrupt: str | None = None,
) -> None:
    months = list(retrains)
    # Each month ingested, validated and featurized exactly once (the corrupt one: ingested, gated, no further).
    for month in months:
        counts = {a: loop.materializations(a, month) for a in DATA_ASSETS}
        expected = (
            {"raw_data": 1, "validated_data": 0, "features": 0}
            if month == corrupt
            else dict.fromkeys(DATA_ASSETS, 1)
        )
        assert counts == expected, (month, counts)
    # No retrain before the drift; a drift retrain within two partitions of it (December or January).
    quiet = [r for m, runs in retrains.items() if m < DRIFT for r in runs]
    assert quiet == [], [(r.tags.get(REASON_TAG), r.run_id) for r in quiet]
    drift = [(m, r) for m, runs in retrains.items() if m >= DRIFT for r in runs]
    assert drift, "the early-1980s drift never triggered a retrain"
    month, run = drift[0]
    assert month in (DRIFT, next_month(DRIFT)), month
    assert run.tags[REASON_TAG] == "drift"
    assert run.tags["dagster/sensor_name"] == sensor_name(loop.cfg, "drift")
    # The drift check flagged what the sensor acted on.
    flagged = [m for m in months if m >= DRIFT and loop.failed_checks(loop.ingested[m], "features")]
    assert flagged and flagged[0] in (DRIFT, next_month(DRIFT)), flagged
    if run.status == dg.DagsterRunStatus.FAILURE:
        blocked = loop.failed_checks(run, "trained_model")
        assert blocked, f"the drift retrain crashed rather than being gated:\n{loop.stack.log('code_server')}"
        record = registry.latest_gate_results("2")
        failed = (
            []
            if record is None
            else [f"{g['gate']}: {g['message']}" for g in record.results if not g["passed"]]
        )
        pytest.fail(f"the drift retrain after {month} was blocked by the release gates: {failed}")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    # Through the gates to champion, fitted on a window that includes the drifted month(s).
    history = registry.history()
    assert [(d.reason, d.previous_version) for d in history] == [("initial", None), ("drift", "1")]
    champion = registry.champion()
    assert champion.version == history[-1].version == "2" and history[-1].run_id == run.run_id
    start, end = champion.tags[TAG_TRAINED_WINDOW].split("..")
    assert end >= DRIFT and start <= DRIFT, champion.tags[TAG_TRAINED_WINDOW]
    gates = registry.latest_gate_results("2")
    assert gates is not None and gates.results and all(g["passed"] for g in gates.results), gates
    # The running service hot-swapped to it.
    wait_for(lambda: call("/health")["model_version"] == "2", 30, "the service to serve version 2")
    rows = month_rows(rainfall, month, month).drop(columns=["rain"]).head(3)
    answer = call("/predict", {"rows": rows.to_dict(orient="records")})
    assert answer["model_version"] == "2" and len(answer["predictions"]) == 3


def first_champion(loop: Loop, registry, initial_end: str = INITIAL_END) -> None:
    """The first look at the source (``FIRST``..``initial_end``): every period so far through the whole chain,
    champion version 1."""
    first = loop.wait_ingested(initial_end, timeout=240)
    assert first.status == dg.DagsterRunStatus.SUCCESS, loop.stack.log("daemon")
    assert first.job_name == run_job_name(loop.cfg) and first.tags[REASON_TAG] == "initial"
    assert (first.tags[RANGE_START], first.tags[RANGE_END]) == (FIRST, initial_end)
    assert registry.champion().version == "1"
    assert loop.settle(first) == []


def live_loop(
    tmp_path: Path,
    production,
    config: Path,
    arrive,
    months: list[str],
    rainfall,
    corrupt=None,
    initial_end: str = INITIAL_END,
):
    """Start the stack on ``config`` (whose source holds ``FIRST``..``initial_end``), wait for the first champion,
    serve it, then let the months arrive."""
    from mlops_assets.config import load_config
    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.storage import storage_from_env

    _, instance, start = production
    cfg = load_config(config)
    registry = ModelRegistry(cfg.model.name, storage_from_env())
    loop = Loop(cfg, instance, start(config, webserver=False))
    first_champion(loop, registry, initial_end)
    with serving(config, dict(os.environ, OMP_NUM_THREADS="1"), tmp_path) as call:
        assert call("/health")["model_version"] == "1"
        retrains = drive(loop, arrive, months, corrupt=corrupt)
        # The months of the first look were not ingested again.
        assert all(loop.materializations(a, m) == 1 for a in DATA_ASSETS for m in (FIRST, initial_end))
        assert_loop(loop, registry, call, retrains, rainfall, corrupt=corrupt)


# The months that arrive one at a time: the last ones before the drift, then the drift (until a retrain).
ARRIVING = ["1981-10", "1981-11", DRIFT, "1982-01"]


@pytest.mark.postgres
@pytest.mark.integration
@pytest.mark.slow
def test_new_monthly_files_flow_to_a_fresh_champion_with_nobody_touching_it(tmp_path, rainfall, production):
    folder = tmp_path / "months"
    folder.mkdir()
    for month in pd.period_range(FIRST, INITIAL_END, freq="M").strftime("%Y-%m"):
        write_month(folder, rainfall, month)
    config = loop_config(tmp_path, {"source": "months/*.csv"})
    corrupt = ARRIVING[0]

    def arrive(month: str) -> None:
        write_month(folder, rainfall, month, corrupt_visibility if month == corrupt else None)

    live_loop(tmp_path, production, config, arrive, ARRIVING, rainfall, corrupt=corrupt)
