"""``mlops-assets check-report`` on real runs: a clean run reports every check and exits 0; a corrupt batch makes
the latest result of a blocking check a failure, named, exit 1; checks that never ran are reported as such."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mlops_assets.cli import main
from mlops_assets.config import load_config
from mlops_assets.defs.factory import build_model_defs
from mlops_assets.runner import execute, instance_for
from mlops_assets.storage import storage_from_env


def _declared_checks(config_path) -> set[tuple[str, str]]:
    cfg = load_config(config_path)
    graph = build_model_defs(cfg, config_path=str(config_path)).resolve_asset_graph()
    return {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}


def _run(config_path):
    """A real run into the instance in DAGSTER_HOME, the one check-report reads."""
    storage = storage_from_env().ensure()
    cfg = load_config(config_path)
    return execute(cfg, config_file=str(config_path), storage=storage, instance=instance_for(storage))


def _report(config_path, tmp_path, tag):
    junit, md = tmp_path / f"{tag}.xml", tmp_path / f"{tag}.md"
    code = main(["check-report", "--config", str(config_path), "--junit", str(junit), "--markdown", str(md)])
    tree = ET.parse(junit)  # well-formed, or this raises
    cases = {(c.get("classname"), c.get("name")): c for c in tree.getroot().iter("testcase")}
    return code, tree.getroot(), cases, md.read_text()


def test_checks_never_executed_are_reported_as_such_not_as_passed(rainfall_slice, tmp_path, capsys):
    path, _ = rainfall_slice(years=3, name="fresh")
    declared = _declared_checks(path)
    instance_for(
        storage_from_env().ensure()
    )  # an instance in which nothing has run yet (no instance: "no state")
    code, root, cases, md = _report(path, tmp_path, "fresh")
    assert code == 0  # nothing failed: nothing ran
    assert {(cls.replace(".", "/"), name) for cls, name in cases} == declared
    assert all(len(c.findall("skipped")) == 1 and not c.findall("failure") for c in cases.values())
    suite = root.find("testsuite")
    assert suite.get("tests") == str(len(declared)) and suite.get("skipped") == str(len(declared))
    assert md.count("never executed") >= len(declared) and "✅" not in md
    out = capsys.readouterr().out
    assert out.count("NEVER RUN") == len(declared) and "PASS" not in out


@pytest.mark.slow
def test_clean_run_reports_every_check_then_a_corrupt_batch_exits_1_naming_the_check(
    rainfall_slice, tmp_path, capsys
):
    path, frame = rainfall_slice(years=3, name="gated")
    declared = _declared_checks(path)
    assert ("gated/raw_data", "raw_data_values_plausible") in declared
    assert ("gated/trained_model", "trained_model_passes_metric_floors") in declared

    first = _run(path)
    assert first.status == "ok", first.error
    code, root, cases, md = _report(path, tmp_path, "clean")
    assert code == 0
    assert {(cls.replace(".", "/"), name) for cls, name in cases} == declared
    assert not list(root.iter("failure"))
    executed = {(c["asset"], c["check"]) for c in first.checks}
    for (cls, name), case in cases.items():
        # Exactly the checks the run evaluated pass; the rest (the drift check: no champion yet) never ran.
        ran = (cls.split(".")[-1], name) in executed
        assert bool(case.findall("skipped")) is not ran, name
    floors = cases[("gated.trained_model", "trained_model_passes_metric_floors")].find("system-out").text
    assert "result: passed" in floors and "blocking: true" in floors and "severity: ERROR" in floors
    measured = float(floors.split("measured: ")[1].splitlines()[0])
    threshold = float(floors.split("threshold: ")[1].splitlines()[0])
    assert measured >= threshold  # the metric floor really was met
    assert "| `gated/raw_data` | `raw_data_values_plausible` | ✅ passed | ERROR | yes |" in md
    assert "no blocking check failed" in md
    capsys.readouterr()

    # The source turns bad: 999,999,999 visibility readings in the last months.
    corrupt = frame.copy()
    corrupt.loc[corrupt.index[-200::2], "visibility"] = 999_999_999.0
    corrupt.assign(date=corrupt["date"].dt.strftime("%Y-%m-%d")).to_csv(
        path.parent / "gated.csv", index=False
    )
    second = _run(path)
    assert second.status == "blocked", second.error
    code, root, cases, md = _report(path, tmp_path, "corrupt")
    assert code == 1
    err = capsys.readouterr().err
    assert "gated/raw_data.raw_data_values_plausible" in err
    failure = cases[("gated.raw_data", "raw_data_values_plausible")].find("failure")
    assert failure is not None and failure.get("type") == "AssetCheckFailed.ERROR"
    assert "blocking" in failure.get("message") and "threshold" in failure.get("message")
    assert root.find("testsuite").get("failures") == str(len(list(root.iter("failure"))))
    assert "**BLOCKED**" in md and "`raw_data_values_plausible` | ❌ failed | ERROR | yes" in md
    # The release gates were not evaluated in the blocked run: their last result (from the clean run) is shown,
    # marked as not coming from the latest run.
    floors = cases[("gated.trained_model", "trained_model_passes_metric_floors")].find("system-out").text
    assert f"run: {first.run_id}" in floors
    assert f"planned in run {second.run_id} (failure) but not evaluated there" in floors
