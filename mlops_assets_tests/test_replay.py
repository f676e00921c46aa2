"""``mlops-assets replay`` on short slices of the rainfall data with a shift introduced in January 1953: the
replay runs the product's own training, gates and promotion at each simulated step."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from mlops_assets import cli
from mlops_assets.commands.replay import plain_progress
from mlops_assets.config import load_config
from mlops_assets.features import features_code_version
from mlops_assets.monitoring import policy, replay
from mlops_assets.monitoring.replay import PARTITION, load_partitions, with_window
from mlops_assets.steps.train import ChampionForComparison, train_challenger, training_data_from_frame


def _shift_and_dry_month(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    late = frame["date"] >= pd.Timestamp("1953-01-01", tz="UTC")
    frame.loc[late, "dew point"] = frame.loc[late, "dew point"] + 1.5
    frame.loc[late, "sea-level pressure"] = frame.loc[late, "sea-level pressure"] * 0.4
    # A month without rain: ROC AUC is undefined there (one class), reported as null.
    dry = frame["date"].dt.strftime("%Y-%m") == "1951-08"
    frame.loc[dry, "rain"] = 0
    return frame


def _shift_and_shuffle_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """The 1953 shift, and from then on labels shuffled (so are the features derived from them): nothing to learn
    there, and a holdout there fails the metric floors."""
    frame = _shift_and_dry_month(frame)
    late = (frame["date"] >= pd.Timestamp("1953-01-01", tz="UTC")).to_numpy()
    frame.loc[late, "rain"] = np.random.default_rng(0).permutation(frame.loc[late, "rain"].to_numpy())
    return frame


def _shift_and_invert_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """The 1953 shift, and from then on every label inverted: what a challenger learns from before cannot pass
    the metric floors on a holdout there."""
    frame = _shift_and_dry_month(frame)
    late = frame["date"] >= pd.Timestamp("1953-01-01", tz="UTC")
    frame.loc[late, "rain"] = 1 - frame.loc[late, "rain"]
    return frame


# Which challengers pass is the gates' business, not the machine's load: a busy 2-core machine can make one
# model's millisecond timings look twice another's (the latency gate's own tests cover its comparison).
CALM_LATENCY = {
    "latency": {"p95_single_row_ms": 2000, "batch_1000_rows_ms": 20000, "max_slowdown": 100, "slack_ms": 1000}
}


@pytest.fixture
def drifting(rainfall_slice):
    path, _ = rainfall_slice(years=6, name="replayed", mutate=_shift_and_dry_month, gates=CALM_LATENCY)
    return path, load_config(path)


def test_replay_scores_before_retraining_and_acts_on_the_shift_with_the_policy_code(drifting, monkeypatch):
    path, cfg = drifting
    calls = []

    def spy(state, now, rcfg=None):
        calls.append((state.latest_partition, now))
        return policy.decide_retrain(state, now, rcfg)

    monkeypatch.setattr(replay, "decide_retrain", spy)
    result = replay.replay(cfg, window=24)
    report = result.report()
    json.dumps(report, allow_nan=False)
    tl = report["timeline"]
    assert report["partitions"] == len(tl) == 72 - 24
    assert [t["partition"] for t in tl][:2] == ["1951-01", "1951-02"]
    # The policy decided once per partition, under the simulated clock: the end of each partition; first on the
    # partition that completes the first training window (no champion yet), then on each scored one.
    assert [v for v, _ in calls] == ["1950-12"] + [t["partition"] for t in tl]
    assert calls[1][1].isoformat() == "1951-02-01T00:00:00+00:00"

    first = report["retrains"][0]
    assert {k: first[k] for k in ("partition", "reason", "version", "detail")} == {
        "partition": "1950-12",
        "reason": "initial",
        "version": "1",
        "detail": "no champion yet",
    }
    assert first["promoted"] is True and first["blocked_by"] == []
    # The first champion is the refit on the newest 24 partitions; the gates judged the recipe fitted on the 18
    # before validation (3) and holdout (3).
    assert first["trained_window"] == "1949-01..1950-12"
    assert first["evaluated_window"] == "1949-01..1950-06"
    assert first["holdout_window"] == "1950-10..1950-12"
    later = report["retrains"][1:]
    assert later and later[0]["reason"] == "drift"
    assert later[0]["partition"] in ("1953-01", "1953-02"), later
    assert not [t for t in tl if t["partition"] < "1953-01" and t["drift"]]

    # Test-then-train: a partition is scored by the champion that was live when it arrived.
    by_key = {t["partition"]: t for t in tl}
    acted = later[0]["partition"]
    assert by_key[acted]["champion_version"] == "1"
    assert later[0]["promoted"] is True and by_key[acted]["retrain"]["version"] == "2"
    # Its fitted window ends with the partition just arrived: the drifted data is learned.
    assert later[0]["trained_window"].endswith(f"..{acted}")
    nxt = tl[[t["partition"] for t in tl].index(acted) + 1]
    assert nxt["champion_version"] == "2"
    # Every partition says why a retrain was or was not made.
    assert all(t["decision"]["detail"] for t in tl)
    assert by_key["1951-03"]["decision"] == {
        "retrain": False,
        "trigger": None,
        "held_by": None,
        "detail": "no trigger fired",
    }
    for t in tl:
        if t["champion_version"] == "1":
            assert t["roc_auc"] == t["static_roc_auc"]
    assert by_key["1951-08"]["roc_auc"] is None and by_key["1951-08"]["static_roc_auc"] is None
    assert by_key["1951-08"]["label_drift"] is True
    shifted = [t for t in tl if t["partition"] >= "1953-01"]
    assert sum(t["drift"] for t in shifted[:3]) >= 2
    assert report["deployments"][1]["at"] == f"{nxt['partition']}-01T00:00:00+00:00"
    assert report["champion"]["version"] == report["deployments"][-1]["version"]
    assert {c["severity"] for c in report["checks"]} == {"WARN"}
    assert report["summary"]["mean_roc_auc"] == pytest.approx(
        np.mean([t["roc_auc"] for t in tl if t["roc_auc"] is not None])
    )


def test_yearly_schedule_replaces_the_policy_for_comparisons(drifting):
    _, cfg = drifting
    frame, keys = load_partitions(cfg)
    assert keys[0] == "1949-01" and len(keys) == 72
    result = replay.replay(
        cfg, frame, window=24, schedule=lambda k: k.endswith("-12"), schedule_name="every January"
    )
    assert [(r["partition"], r["reason"]) for r in result.retrains] == [
        ("1950-12", "initial"),
        ("1951-12", "every January"),
        ("1952-12", "every January"),
        ("1953-12", "every January"),
    ]
    served = {t["champion_version"] for t in result.timeline if t["partition"].startswith("1954")}
    assert served == {"4"}, result.retrains


def test_replay_champion_is_what_train_challenger_and_the_promotion_rule_give(drifting):
    """Step by step, the replay's champions are the challengers the train step produces on the same partitions
    beside the same champion, promoted exactly when every gate passed."""
    _, cfg = drifting
    frame, _ = load_partitions(cfg)
    result = replay.replay(cfg, frame, window=24)
    report = result.report()
    cfg = with_window(cfg, 24)
    version = features_code_version(cfg)
    probe = frame[frame[PARTITION] == "1953-06"]

    def upto(key: str) -> pd.DataFrame:
        return frame[frame[PARTITION] <= key]

    def same_model(replayed, direct) -> None:
        cols = direct.deployed.feature_columns
        assert replayed.deployed.feature_columns == cols
        np.testing.assert_array_equal(
            replayed.deployed.pipeline.predict_proba(probe[cols]),
            direct.deployed.pipeline.predict_proba(probe[cols]),
        )

    first = train_challenger(
        cfg, training_data_from_frame(cfg, upto("1950-12")), feature_version=version, champion=None
    )
    assert first.passed
    assert report["deployments"][0]["version"] == "1"
    assert report["deployments"][0]["trained_window"] == "{}..{}".format(*first.trained_window)
    same_model(result.challengers["1"], first)

    acted = next(r for r in report["retrains"] if r["reason"] != "initial")
    champion = ChampionForComparison(
        "1", first.deployed.pipeline, version, first.threshold.value, first.trained_window[1]
    )
    second = train_challenger(
        cfg,
        training_data_from_frame(cfg, upto(acted["partition"])),
        feature_version=version,
        champion=champion,
    )
    assert acted["version"] == "2"
    assert acted["gates"] == {g.gate: g.passed for g in second.gates}
    assert acted["promoted"] is second.passed
    assert acted["trained_window"] == "{}..{}".format(*second.trained_window)
    assert acted["threshold"] == second.threshold.value
    same_model(result.challengers["2"], second)
    after = [t for t in report["timeline"] if t["partition"] > acted["partition"]]
    assert after[0]["champion_version"] == ("2" if second.passed else "1")


def test_a_challenger_blocked_by_a_gate_is_not_promoted_and_the_champion_stays(rainfall_slice):
    # Holdout of one partition: from January 1953 the labels are inverted. The first challenger after that is judged
    # on inverted labels it has barely seen and is blocked. Labels that stay inverted look like a concept that
    # changed (the gates cannot tell it from a label feed broken for good): once the backtest's windows hold enough
    # of them, a challenger that learned them passes, with gates.floors.champion_below_floor set to "block" too.
    path, _ = rainfall_slice(
        years=5,
        name="inverted",
        mutate=_shift_and_invert_labels,
        model={"train_window_partitions": 24, "holdout_partitions": 1},
        gates={**CALM_LATENCY, "floors": {"champion_below_floor": "block"}},
    )
    report = replay.replay(load_config(path)).report()
    later = [r for r in report["retrains"] if r["reason"] != "initial"]
    assert later and all(r["partition"] >= "1953-01" for r in later), later
    first = later[0]
    assert first["promoted"] is False and "metric_floors" in first["blocked_by"], first
    assert first["gates"]["metric_floors"] is False
    assert first["blocked_message"].startswith("metric_floors: ")
    # The first champion served every partition until a challenger passed; the blocked one was never deployed.
    promoted = [r for r in later if r["promoted"]]
    until = promoted[0]["partition"] if promoted else "9999-99"
    assert {t["champion_version"] for t in report["timeline"] if t["partition"] <= until} == {"1"}
    assert [d["version"] for d in report["deployments"]] == ["1"] + [r["version"] for r in promoted]
    assert first["version"] not in {d["version"] for d in report["deployments"]}
    by_key = {t["partition"]: t for t in report["timeline"]}
    blocked = by_key[first["partition"]]
    assert blocked["retrain"]["promoted"] is False and "metric_floors" in blocked["retrain"]["blocked_by"]
    # Storm control saw the failed challenger: the drift that persists is held back, not retrained every month.
    held = [t["decision"]["held_by"] for t in report["timeline"] if t["partition"] > first["partition"]]
    assert {"failed_challenger", "cooldown", "cap"} & set(held)


def test_an_impossible_floor_means_no_champion_is_ever_served(rainfall_slice):
    path, _ = rainfall_slice(
        years=4,
        name="impossible",
        model={"train_window_partitions": 24},
        gates={"floors": {"roc_auc": 1.0}},
    )
    result = replay.replay(load_config(path))
    report = result.report()
    json.dumps(report, allow_nan=False)
    assert report["retrains"] and report["deployments"] == [] and report["champion"] is None
    for r in report["retrains"]:
        assert r["reason"] == "initial" and r["promoted"] is False and "metric_floors" in r["blocked_by"], r
    assert {t["champion_version"] for t in report["timeline"]} == {None}
    assert {t["roc_auc"] for t in report["timeline"]} == {None}
    # Each month asks for a first champion; storm control spaces the attempts out.
    assert len(report["retrains"]) < len(report["timeline"]) / 2
    assert {t["decision"]["trigger"] for t in report["timeline"]} == {"initial"}


def test_the_yearly_schedule_goes_through_the_gates_too(rainfall_slice):
    # From January 1953 the labels are noise: the challenger of December 1953 is judged on a holdout of noise.
    path, _ = rainfall_slice(
        years=6,
        name="shuffled_yearly",
        mutate=_shift_and_shuffle_labels,
        model={"train_window_partitions": 24},
        gates=CALM_LATENCY,
    )
    result = replay.replay(
        load_config(path), schedule=lambda k: k.endswith("-12"), schedule_name="every January"
    )
    assert [(r["partition"], r["reason"]) for r in result.retrains] == [
        ("1950-12", "initial"),
        ("1951-12", "every January"),
        ("1952-12", "every January"),
        ("1953-12", "every January"),
    ]
    last = result.retrains[-1]
    assert last["version"] == "4" and last["promoted"] is False and "metric_floors" in last["blocked_by"]
    # Every schedule step was gated, and a champion changed exactly where its challenger passed.
    for r in result.retrains:
        assert r["promoted"] is all(r["gates"].values()), r
    assert [d["version"] for d in result.deployments] == [
        r["version"] for r in result.retrains if r["promoted"]
    ]
    # The blocked challenger (version 4) never served: 1954 stays with the last champion promoted before it.
    served_1954 = {t["champion_version"] for t in result.timeline if t["partition"].startswith("1954")}
    assert served_1954 == {result.deployments[-1]["version"]} and "4" not in served_1954


def test_window_longer_than_the_data_is_an_error(drifting):
    from mlops_assets.training.pipeline import TrainingError

    _, cfg = drifting
    with pytest.raises(TrainingError, match="more than the training window of 80 partitions"):
        replay.replay(cfg, window=80)


def test_plain_progress_writes_a_line_per_tenth_and_at_the_end():
    stream = io.StringIO()
    tick = plain_progress(stream)
    for done in range(1, 21):
        tick(done, 20)
    lines = stream.getvalue().splitlines()
    assert [line.split(" partitions")[0] for line in lines] == [
        f"replay: {d}/20" for d in (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)
    ]
    assert lines[-1].startswith("replay: 20/20 partitions (100%), ")


@pytest.mark.slow
def test_cli_replay_writes_report_and_plot(rainfall_slice, tmp_path, capsys):
    path, _ = rainfall_slice(
        years=5,
        name="cli_replay",
        mutate=_shift_and_dry_month,
        model={"train_window_partitions": 24},
        gates=CALM_LATENCY,
    )
    report, plot = tmp_path / "out" / "replay.json", tmp_path / "out" / "replay.png"
    code = cli.main(["replay", "--config", str(path), "--report", str(report), "--plot", str(plot)])
    assert code == 0
    data = json.loads(report.read_text())
    assert {"status", "partitions", "checks", "champion", "deployments", "retrains", "timeline"} <= set(data)
    assert data["status"] == "ok" and data["partitions"] == 60 - 24
    assert set(data["timeline"][0]) >= {"partition", "champion_version", "roc_auc", "static_roc_auc", "drift"}
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # stderr is not a terminal here (as in CI): progress comes as plain lines, the last one at 100% (the 36 scored
    # partitions and the one the first champion is trained on).
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("replay: ")]
    assert err and err[-1].startswith("replay: 37/37 partitions (100%)"), err
