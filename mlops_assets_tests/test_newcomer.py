"""A newcomer's first hour, through the real CLI in subprocesses: the bundled example of one's own data runs as the
README says and tells where everything went; every likely bad input gets one line naming the file, column or key,
exit code 2, and leaves the stored state byte for byte as it was; a blocked run reads as a short summary and
``status`` says it was blocked; commands in a folder without state say so and create nothing.

One real run of the example (module fixture) provides the state the other cases must leave alone; the bad inputs
fail before Dagster or MLflow is imported, so a dozen of them run in parallel in a few seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlops_assets.config import load_config
from mlops_assets.data.labels import positive_label_problem
from mlops_assets.data.preflight import PEEK_ROWS, check_source
from mlops_assets.data.sources import SourceError, SourceUnavailableError, read_source

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "nyc_weather"
MLFLOW_UI = "http://127.0.0.1:5000"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "DAGSTER_"))}
    env.update(MLOPS_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path, *, importtime: bool = False):
    py = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "mlops_assets.cli"]
    t0 = time.perf_counter()
    proc = subprocess.run([*py, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    return proc, time.perf_counter() - t0


def _snapshot(home: Path) -> dict[str, str]:
    """Every stored file under ``home`` with its sha256: the offline store, contract, registry database, Dagster
    instance, artifacts."""
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def example(tmp_path_factory, migrated_mlflow_db):
    """The README's own-data example run once, as written, with an MLflow UI address configured."""
    work = tmp_path_factory.mktemp("newcomer")
    home = work / "home"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")  # MLflow's migrations are not what is tested here
    env = _env(home, MLOPS_MLFLOW_UI_URL=MLFLOW_UI)
    proc, seconds = _cli(
        ["run", "--config", str(EXAMPLE / "mlops.yaml"), "--report", "report.json"], env, work
    )
    return {"work": work, "home": home, "env": env, "proc": proc, "seconds": seconds}


def test_the_example_runs_and_says_where_everything_went(example):
    proc, home = example["proc"], example["home"]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = json.loads((example["work"] / "report.json").read_text())
    assert report["status"] == "ok", proc.stdout
    assert report["partitions"] == 12
    assert report["champion"]["model_name"] == "nyc_weather" and report["champion"]["version"] == "1"
    assert report["champion"]["metrics"]["roc_auc"] > 0.8  # humidity and visibility foretell rain
    out = proc.stdout
    assert "champion: nyc_weather version 1" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{(home / 'mlflow.db').resolve()}" in out
    card = next(line for line in out.splitlines() if line.strip().startswith("model card"))
    assert Path(card.split(None, 2)[2]).read_text().startswith("#")
    assert (
        f"MLOPS_CONFIG={EXAMPLE / 'mlops.yaml'}" in out and "dagster dev -m mlops_assets.definitions" in out
    )
    assert "mlops-assets serve" in out
    # Not a terminal: plain progress lines, and none of Dagster's own log.
    assert "run: " in proc.stderr and "trained_model: release gates" in proc.stderr
    assert "ERROR" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_second_run_on_unchanged_data_is_quiet_too(example):
    """The second `make run` a newcomer types: nothing to retrain, and none of the engine's warnings about the
    release checks that therefore have no result."""
    assert example["proc"].returncode == 0, example["proc"].stderr[-3000:]
    proc, _ = _cli(["run", "--config", str(EXAMPLE / "mlops.yaml")], example["env"], example["work"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training: unchanged data and recipe since champion version 1" in proc.stdout
    assert [line for line in proc.stderr.splitlines() if not line.startswith("run: ")] == []


def test_metrics_are_numbers_and_link_to_mlflow(example, monkeypatch):
    assert example["proc"].returncode == 0, example["proc"].stderr[-3000:]
    # The run's own instance (its event log places its files by DAGSTER_HOME).
    monkeypatch.setenv("DAGSTER_HOME", str(example["home"] / "dagster"))
    instance = dg.DagsterInstance.from_config(str(example["home"] / "dagster"))
    try:
        event = instance.get_latest_materialization_event(dg.AssetKey(["nyc_weather", "trained_model"]))
        assert event is not None and event.asset_materialization is not None
        md = event.asset_materialization.metadata
    finally:
        instance.dispose()
    assert isinstance(md["holdout_roc_auc"], dg.FloatMetadataValue)
    assert 0.8 < md["holdout_roc_auc"].value < 1
    assert isinstance(md["holdout_rows"], dg.IntMetadataValue)
    run_id = md["mlflow_run_id"].value
    assert isinstance(md["mlflow_run"], dg.UrlMetadataValue)
    assert md["mlflow_run"].value.startswith(f"{MLFLOW_UI}/#/experiments/")
    assert md["mlflow_run"].value.endswith(f"/runs/{run_id}")
    assert md["mlflow_model_version"].value == f"{MLFLOW_UI}/#/models/nyc_weather/versions/1"
    # The ROC curve and confusion matrix shown in the UI: Markdown images (Dagster has no image type).
    for name in ("roc_curve", "confusion_matrix"):
        assert isinstance(md[name], dg.MarkdownMetadataValue)
        assert md[name].value.startswith(f"![{name}](data:image/png;base64,")
        assert len(md[name].value) < 70_000
    # The MLflow run of that model is named after it and its trigger, not after the Dagster job.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{example['home'] / 'mlflow.db'}")
    assert client.get_run(run_id).info.run_name.startswith("nyc_weather-initial-")


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


HOURS = [f"2013-01-{d:02d}T{h:02d}:00:00Z" for d in (1, 2) for h in range(0, 24, 6)]


def _rows(*, sep: str = ",", label=("no", "yes"), stamps=HOURS) -> str:
    lines = [sep.join(["time_hour", "humid", "rain"])]
    lines += [sep.join([t, str(50 + i), label[i % len(label)]]) for i, t in enumerate(stamps)]
    return "\n".join(lines) + "\n"


def _config(folder: Path, *, source: str = "data.csv", name: str = "nyc_weather", extra: str = "", **dataset):
    ds = {
        "source": source,
        "timestamp_column": "time_hour",
        "label_column": "rain",
        "positive_label": '"yes"',
        **dataset,
    }
    body = "dataset:\n" + "".join(f"  {k}: {v}\n" for k, v in ds.items())
    path = folder / "mlops.yaml"
    path.write_text(body + f"model:\n  name: {name}\n" + extra)
    return path


# (case, setup(folder) -> config path, the one line's expected fragments)
def _empty(d: Path) -> Path:
    (d / "data.csv").write_bytes(b"")
    return _config(d)


def _header_only(d: Path) -> Path:
    _csv(d / "data.csv", "time_hour,humid,rain\n")
    return _config(d)


def _semicolons(d: Path) -> Path:
    _csv(d / "data.csv", _rows(sep=";"))
    return _config(d)


def _no_label(d: Path) -> Path:
    _csv(d / "data.csv", _rows())
    return _config(d, label_column="delayed")


def _boolean_label(d: Path) -> Path:
    _csv(d / "data.csv", _rows())
    return _config(d, positive_label="true")


def _label_case(d: Path) -> Path:
    _csv(d / "data.csv", _rows())
    return _config(d, positive_label="Yes")


def _three_labels(d: Path) -> Path:
    _csv(d / "data.csv", _rows(label=("no", "yes", "maybe")))
    return _config(d)


def _one_class(d: Path) -> Path:
    _csv(d / "data.csv", _rows(label=("no",)))
    return _config(d)


def _positive_label_beyond_the_first_rows(d: Path) -> Path:
    # One class in the rows the check peeks at, then another that is not the positive label either.
    hours = pd.date_range("2013-01-01", periods=PEEK_ROWS + 200, freq="h", tz="UTC").strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    labels = ["no"] * PEEK_ROWS + ["maybe"] * 200
    pd.DataFrame({"time_hour": hours, "humid": 50, "rain": labels}).to_csv(d / "data.csv", index=False)
    return _config(d)


def _utf16(d: Path) -> Path:
    (d / "data.csv").write_bytes(_rows().encode("utf-16"))
    return _config(d)


def _day_first(d: Path) -> Path:
    _csv(d / "data.csv", _rows(stamps=[f"{day}/01/2013 06:00" for day in range(13, 21)]))
    return _config(d)


def _wrong_format(d: Path) -> Path:
    _csv(d / "data.csv", _rows(stamps=[f"{day}/01/2013 06:00" for day in range(13, 21)]))
    return _config(d, timestamp_format="'%Y-%m-%d %H:%M'")


def _spreadsheet_days(d: Path) -> Path:
    _csv(d / "data.csv", _rows(stamps=[str(41275 + i) for i in range(8)]))
    return _config(d)


def _missing_file(d: Path) -> Path:
    return _config(d, source="nowhere.csv")


def _unknown_categorical(d: Path) -> Path:
    _csv(d / "data.csv", _rows())
    return _config(d, categorical_columns="[carrier]")


def _another_dataset(d: Path) -> Path:
    # The README's flights example under the model name the example already uses: another dataset entirely.
    _csv(
        d / "flights.csv",
        "time_hour,carrier,delayed\n2013-01-01T06:00:00Z,UA,no\n2013-01-01T07:00:00Z,AA,yes\n",
    )
    return _config(d, source="flights.csv", label_column="delayed")


BAD_INPUTS = {
    "empty file": (_empty, ["data.csv", "the file is empty (0 bytes)"]),
    "header only": (_header_only, ["data.csv", "a header row but no data rows"]),
    "semicolons": (_semicolons, ["data.csv", "semicolon-separated", "save it comma-separated"]),
    "missing label column": (_no_label, ["data.csv", "label column 'delayed' not found", "humid"]),
    "boolean positive label": (
        _boolean_label,
        ["read as the boolean True", 'quote it, positive_label: "yes"'],
    ),
    "label spelled otherwise": (_label_case, ["'Yes' is not one of the labels", 'positive_label: "yes"']),
    "three labels": (_three_labels, ["more than two classes"]),
    "one class in every row": (
        _one_class,
        [
            "data.csv: label column 'rain' holds one class in every row ('no')",
            "dataset.positive_label 'yes' never occurs",
            "a binary model needs both classes",
            "check dataset.label_column and dataset.positive_label",
        ],
    ),
    "positive label only beyond the first rows, and absent": (
        _positive_label_beyond_the_first_rows,
        ["dataset.positive_label 'yes' is not one of the labels ['maybe', 'no']"],
    ),
    "UTF-16 file": (_utf16, ["data.csv", "not UTF-8 text", "save it as UTF-8"]),
    "day-first dates": (_day_first, ["time_hour", "'13/01/2013 06:00'", "set dataset.timestamp_format"]),
    "wrong timestamp_format": (_wrong_format, ["does not match dataset.timestamp_format '%Y-%m-%d %H:%M'"]),
    "spreadsheet day numbers": (_spreadsheet_days, ["time_hour", "holds numbers (first: 41275)"]),
    "missing file": (_missing_file, ["nowhere.csv", "file not found"]),
    "unknown categorical column": (_unknown_categorical, ["dataset.categorical_columns names ['carrier']"]),
    "another dataset, same model name": (
        _another_dataset,
        ["model.name 'nyc_weather'", "holds another dataset", "its own model.name", "MLOPS_HOME"],
    ),
}


def test_bad_inputs_get_one_line_exit_2_and_change_nothing(example, tmp_path):
    assert example["proc"].returncode == 0, example["proc"].stderr[-3000:]
    home, env = example["home"], example["env"]
    before = _snapshot(home)
    configs = {}
    for i, (case, (setup, _)) in enumerate(BAD_INPUTS.items()):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        configs[case] = setup(folder)

    def attempt(case: str):
        return _cli(["run", "--config", str(configs[case])], env, tmp_path, importtime=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(configs, pool.map(attempt, configs), strict=True))

    for case, (proc, _seconds) in results.items():
        errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
        assert proc.returncode == 2, (case, proc.stdout, errors[-30:])
        assert len(errors) == 1, (case, errors[-30:])
        line = errors[0]
        assert line.startswith("mlops-assets run: configuration error: "), (case, line)
        for fragment in BAD_INPUTS[case][1]:
            assert fragment in line, (case, fragment, line)
        assert "You might want to try" not in line and "Traceback" not in line
        # Found before the heavy stack is imported: an answer in a second or two, not after Dagster's start.
        imported = {
            r.rsplit("|", 1)[1].strip().split(".")[0]
            for r in proc.stderr.splitlines()
            if r.startswith("import time:")
        }
        assert not imported & {"dagster", "mlflow", "sklearn"}, (case, imported & {"dagster", "mlflow"})
    assert _snapshot(home) == before


def _registered(home: Path) -> list[tuple[str, str, list[str], dict[str, str]]]:
    """Every registered model version with its aliases and tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    return sorted(
        (v.name, v.version, sorted(v.aliases), dict(v.tags)) for v in client.search_model_versions("")
    )


def _example_frame() -> pd.DataFrame:
    return pd.read_csv(EXAMPLE / "weather_lga.csv.gz", dtype=str)


def _renamed_label_in_a_later_file(d: Path) -> Path:
    # A monthly export whose label column was renamed from April on: the check reads the first file's rows only.
    frame = _example_frame()
    april = frame["time_hour"] >= "2013-04"
    frame[~april].to_csv(d / "weather_1.csv", index=False)
    frame[april].rename(columns={"rain": "Rain"}).to_csv(d / "weather_2.csv", index=False)
    return _config(d, source="weather_*.csv", drop_columns="[precip]")


# Found by a step, beyond the rows the pre-run check reads: (setup, the one line's expected fragments).
BAD_INPUTS_IN_THE_RUN = {
    "label column renamed in a later file": (
        _renamed_label_in_a_later_file,
        ["weather_2.csv: label column 'rain' not found", "'Rain'", "set dataset.label_column"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS_IN_THE_RUN))
def test_bad_inputs_found_by_a_step_get_one_line_exit_2_and_change_no_model_state(example, tmp_path, case):
    """The run is recorded failed (in Dagster, and for `status`); the data, contract, registry and champion stay."""
    assert example["proc"].returncode == 0, example["proc"].stderr[-3000:]
    home, env = example["home"], example["env"]
    setup, fragments = BAD_INPUTS_IN_THE_RUN[case]
    config = setup(tmp_path)
    # Not a bad input for the check: the first rows are fine.
    check_source(load_config(config), home, config)
    # The run's own records: Dagster's instance, the last run for `status`, and MLflow's run beside the registry.
    records = ("dagster/", "nyc_weather/last_run.json", "mlflow.db")
    before = {k: v for k, v in _snapshot(home).items() if not k.startswith(records)}
    registry_before = _registered(home)

    proc, _ = _cli(["run", "--config", str(config), "--report", "report.json"], env, tmp_path)

    # Besides the progress lines (plain, as stderr is not a terminal): one line.
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("run: ")]
    assert proc.returncode == 2, (proc.stdout, proc.stderr[-3000:])
    assert len(errors) == 1, errors[-30:]
    assert errors[0].startswith("mlops-assets run: configuration error: "), errors[0]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    after = {k: v for k, v in _snapshot(home).items() if not k.startswith(records)}
    assert after == before
    assert _registered(home) == registry_before
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["champion"]["version"] == "1"
    status, _ = _cli(["status", "--config", str(config)], env, tmp_path)
    assert status.stdout.splitlines()[1].startswith("last run (run, by mlops-assets run): FAILED at "), (
        status.stdout
    )


def test_commands_without_state_say_so_and_create_nothing(tmp_path):
    home = tmp_path / "nothing_here"
    env = _env(home)
    for command in (["status"], ["rollback"], ["check-report"], ["serve"]):
        proc, _ = _cli(command, env, tmp_path)
        assert proc.returncode == 1, (command, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "no state yet" in lines[0], (command, lines)
        assert "run `mlops-assets run` first" in lines[0]
        assert not home.exists(), command
    # Nor does a run whose source cannot be ingested.
    config = _missing_file(tmp_path)
    proc, _ = _cli(["run", "--config", str(config)], env, tmp_path)
    assert proc.returncode == 2 and "file not found" in proc.stderr
    assert not home.exists()


def test_a_blocked_run_reads_as_a_summary_and_status_says_blocked(example, tmp_path):
    assert example["proc"].returncode == 0, example["proc"].stderr[-3000:]
    env = example["env"]
    frame = pd.read_csv(EXAMPLE / "weather_lga.csv.gz", dtype=str)
    # A feed gone bad in June: humidity arrives as text.
    june = frame["time_hour"].str.startswith("2013-06")
    frame.loc[june, "humid"] = frame.loc[june, "humid"] + " %"
    frame.to_csv(tmp_path / "weather.csv", index=False)
    config = tmp_path / "mlops.yaml"
    config.write_text(
        (EXAMPLE / "mlops.yaml").read_text().replace("source: weather_lga.csv.gz", "source: weather.csv")
    )

    proc, _ = _cli(["run", "--config", str(config)], env, tmp_path)

    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("status: blocked")
    dtypes = [line for line in out.splitlines() if "BLOCKED raw_data_has_expected_dtypes" in line]
    assert len(dtypes) == 1, out
    assert (
        "Numeric columns hold numbers" in dtypes[0]
        and "2013-06" in dtypes[0]
        and "columns humid" in dtypes[0]
    )
    assert f"blocked rows {example['home'] / 'nyc_weather' / 'raw_data'}" in " ".join(out.split())
    assert "champion: nyc_weather version 1" in out  # the champion stays
    noise = proc.stdout + proc.stderr
    assert "ERROR" not in noise and "Traceback" not in noise and "{'" not in noise

    status, _ = _cli(["status", "--config", str(config)], env, tmp_path)
    lines = status.stdout.splitlines()
    assert lines[1].startswith("last run (run, by mlops-assets run): BLOCKED at "), status.stdout
    assert any(line.strip().startswith("BLOCKED raw_data_has_expected_dtypes") for line in lines[2:])
    assert "champion: version 1" in status.stdout

    verbose, _ = _cli(["run", "--config", str(config), "--verbose"], env, tmp_path)
    assert verbose.returncode == 0 and "status: blocked" in verbose.stdout
    assert "STEP_FAILURE" in verbose.stderr or "ERROR" in verbose.stderr  # Dagster's own log, on request


# ---------------------------------------------------------------------------------------------- in process


@pytest.mark.parametrize(
    ("written", "read"),
    [("YES", "YES"), ("no", "no"), ("on", "on"), ("Off", "Off"), ("true", True), ('"yes"', "yes"), ("1", 1)],
)
def test_positive_label_keeps_the_spelling_yaml_would_turn_into_a_boolean(tmp_path, written, read):
    path = tmp_path / "m.yaml"
    path.write_text(
        f"dataset: {{source: d.csv, timestamp_column: t, label_column: y, positive_label: {written}}}\n"
        "model: {refit: yes}\n"  # other booleans are YAML's as before
    )
    cfg = load_config(path)
    assert cfg.dataset.positive_label == read and type(cfg.dataset.positive_label) is type(read)
    assert cfg.model.refit is True


def test_positive_label_problems_say_how_to_write_it():
    assert positive_label_problem("YES", ["NO", "YES"]) is None
    assert positive_label_problem(1, [0.0, 1.0]) is None
    assert positive_label_problem("yes", ["yes"]) is None  # one class seen: the other may come later
    assert 'quote it, positive_label: "on"' in positive_label_problem(True, ["off", "on"])
    assert 'positive_label: "YES"' in positive_label_problem("yes", ["NO", "YES"])


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + _rows().encode())
    (tmp_path / "m.yaml").write_text(
        "dataset: {source: bom.csv, timestamp_column: time_hour, label_column: rain, positive_label: 'yes'}\n"
    )
    frame = read_source(load_config(tmp_path / "m.yaml"))
    assert list(frame.columns) == ["time_hour", "humid", "rain"]
    assert len(frame) == len(HOURS)


def test_the_committed_example_data_is_what_its_script_makes():
    sys.path.insert(0, str(EXAMPLE))
    try:
        import make_data
    finally:
        sys.path.remove(str(EXAMPLE))
    made = make_data.build()
    with gzip.open(EXAMPLE / "weather_lga.csv.gz", "rt") as fh:
        committed = pd.read_csv(fh)
    assert list(committed.columns) == [*make_data.COLUMNS, "rain"]
    assert len(committed) == len(made) == 8706
    assert committed["rain"].tolist() == made["rain"].tolist()
    pd.testing.assert_frame_equal(committed.drop(columns="rain"), made.drop(columns="rain"), atol=1e-3)


@pytest.mark.parametrize(("sep", "word"), [("\t", "tab"), ("|", "pipe"), (";", "semicolon")])
def test_a_file_with_another_separator_is_named_as_such(tmp_path, sep, word):
    _csv(tmp_path / "data.csv", _rows(sep=sep))
    with pytest.raises(SourceError, match=f"data.csv: read as one column .*: the file is {word}-separated"):
        check_source(load_config(_config(tmp_path)), None)


class ConfigError(ValueError):
    """Another package's class of the same name as the project's."""


def test_only_the_projects_configuration_and_data_errors_count_as_the_users():
    from dagster._utils.error import SerializableErrorInfo, serializable_error_info_from_exc_info

    from mlops_assets.features.code_version import FeatureDefinitionError
    from mlops_assets.runner import input_error
    from mlops_assets.steps.train import TrainingWaitingError

    def step_failure(error: BaseException) -> SerializableErrorInfo:
        try:
            raise error
        except BaseException:
            cause = serializable_error_info_from_exc_info(sys.exc_info())
        return SerializableErrorInfo(
            "dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op\n",
            [],
            "DagsterExecutionStepExecutionError",
            cause=cause,
        )

    assert input_error(step_failure(SourceError("data.csv: label column 'rain' not found"))) == (
        "data.csv: label column 'rain' not found"
    )
    assert input_error(step_failure(FeatureDefinitionError("features.definitions.0: defined twice"))) == (
        "features.definitions.0: defined twice"
    )
    assert input_error(step_failure(SourceError("dataset.query failed:\n  (sqlite3) no such table"))) == (
        "dataset.query failed: (sqlite3) no such table"
    )
    for other in (
        TrainingWaitingError("waiting: the training window has one class"),  # waits for data: exit 1
        OSError(28, "No space left on device"),
        SourceUnavailableError("dataset.query failed on postgresql://db/x: connection refused"),
        RuntimeError("dataset.source: a message that reads like a configuration error"),
        ConfigError("not the project's class"),
    ):
        assert input_error(step_failure(other)) is None, other
