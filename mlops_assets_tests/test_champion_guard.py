"""The guarded champion: one registry function writes the alias; it refuses a version without a passing gate record
for the current feature version unless a named person overrides it with a reason (recorded, alerted); the service
refuses an alias moved by hand to an ungated version; approval makes a cleared challenger wait for a person. Real
SQLite MLflow store, real CLI entry points, a real webhook receiver and SMTP server on loopback, and one real
`mlops-assets run` subprocess."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlops_assets.alerts import AlertsConfig
from mlops_assets.cli import main as cli_main
from mlops_assets.config import BUNDLED_CONFIG, load_config
from mlops_assets.registry.errors import ApprovalError, GateRefusedError
from mlops_assets.registry.guard import Override
from mlops_assets.registry.model_registry import CHAMPION, ModelRegistry
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.support import HttpReceiver, SmtpReceiver, gate_passed, rainfall_xy
from mlops_assets_tests.test_commands import _model

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_assets"


def _bundled_with(tmp_path: Path, **sections) -> Path:
    data = yaml.safe_load(BUNDLED_CONFIG.read_text())
    source = data["dataset"]["source"]
    if "://" not in source:
        data["dataset"]["source"] = str(BUNDLED_CONFIG.parent / source)
    data.update(sections)
    path = tmp_path / "mlops.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _toy(reg: ModelRegistry, rows: int, feature_version: str | None = None) -> str:
    X, _ = rainfall_xy()
    return reg.register(
        _model(rows), input_example=X.head(3), feature_version=feature_version or reg.feature_version
    ).version


def test_only_move_champion_writes_the_alias():
    """Every path that moves @champion goes through ModelRegistry.move_champion: the alias writers are called
    from nowhere else in the package."""
    allowed = {
        "_move_aliases": {"move_champion"},
        "_set_alias": {"_move_aliases"},
        # register() sets the new version's own alias (challenger) and refuses champion and previous.
        "set_registered_model_alias": {"_set_alias", "register"},
        "set_alias": {"_set_alias"},
    }
    found: dict[str, set[str]] = {name: set() for name in allowed}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                if call and node.func.attr in allowed:
                    found[node.func.attr].add(fn.name)
    assert found == allowed
    registry = ModelRegistry("guarded", storage_from_env())
    for alias in ("champion", "previous"):
        with pytest.raises(ValueError, match="promote it instead"):
            registry.register(object(), input_example=None, alias=alias)


def test_rollback_to_a_gate_failed_version_is_refused_and_allowed_with_an_override(tmp_path, capsys):
    with HttpReceiver() as http:
        path = _bundled_with(tmp_path, alerts={"channels": [{"type": "webhook", "url": f"{http.url}/hook"}]})
        cfg, storage = load_config(path), storage_from_env()
        reg = ModelRegistry.from_config(cfg, storage)
        v1, v2, v3 = _toy(reg, 300), _toy(reg, 600), _toy(reg, 900)
        gate_passed(reg, v1, v2)
        reg.record_gate_results(
            v3,
            [
                {"gate": "sanity", "passed": True, "message": "ok"},
                {"gate": "latency", "passed": False, "message": "p95 120 ms > 50 ms"},
            ],
        )
        reg.promote(v1, reason="initial", run_id="run-a")
        with pytest.raises(GateRefusedError, match="release gates failed: latency"):
            reg.promote(v3, reason="manual")  # the Python API goes through the guard too
        reg.promote(v2, reason="drift", run_id="run-b")

        assert cli_main(["rollback", "--config", str(path), "--to", v3]) == 1
        err = capsys.readouterr().err
        assert f"version {v3}: release gates failed: latency" in err and f"champion stays version {v2}" in err
        assert cli_main(["rollback", "--config", str(path), "--to", v3, "--override-gates"]) == 2
        assert "--override-gates needs --reason" in capsys.readouterr().err
        assert reg.aliases()[CHAMPION] == v2

        why = "v2 mislabels every row since the schema change; v3 is slow but right"
        args = ["rollback", "--config", str(path), "--to", v3, "--override-gates", "--reason", why]
        assert cli_main([*args, "--by", "alice"]) == 0
        assert "GATES OVERRIDDEN by alice" in capsys.readouterr().out
        assert reg.aliases()[CHAMPION] == v3

        # A version trained on other feature definitions is refused even with a passing gate record.
        v4 = _toy(reg, 1200, feature_version="0000000000000000")
        gate_passed(reg, v4)
        assert cli_main(["rollback", "--config", str(path), "--to", v4]) == 1
        assert "trained on feature version 0000000000000000" in capsys.readouterr().err

        assert cli_main(["history", "--config", str(path), "--json"]) == 0
        trail = json.loads(capsys.readouterr().out)
        assert cli_main(["history", "--config", str(path)]) == 0
        text = capsys.readouterr().out

    last = reg.history()[-1]
    assert (last.version, last.previous_version, last.moved_by, last.override_reason) == (
        v3,
        v2,
        "alice",
        why,
    )
    assert last.gate_record["cleared"] is False and last.gate_record["failed"] == ["latency"]
    assert last.sha256 == reg.get_version(v3).tags["mlops.sha256"]
    events = http.events()
    assert [(e["event"], e["version"], e["severity"]) for e in events] == [
        ("promoted", v1, "info"),
        ("promoted", v2, "info"),
        ("rolled_back", v3, "critical"),
    ]
    assert (
        "GATES OVERRIDDEN (release gates failed: latency" in events[-1]["summary"]
        and why in events[-1]["summary"]
    )
    move = trail["moves"][-1]
    assert (move["from"], move["to"], move["by"], move["override_reason"]) == (v2, v3, "alice", why)
    assert move["gate_record"]["failed"] == ["latency"]
    assert [(a["kind"], a["state"], a["deliveries"][0]["ok"]) for a in move["alerts"]] == [
        ("rolled_back", "sent", True)
    ]
    assert [m["by"] for m in trail["moves"]] == ["python-api", "python-api", "alice"]
    assert f"{v2} -> {v3}  by alice" in text and f"GATES OVERRIDDEN: {why}" in text


def test_an_alias_moved_by_hand_to_an_ungated_version_is_not_served(tmp_path):
    from mlops_assets.features import features_code_version
    from mlops_assets.serving.service import PredictionService, ServiceOptions
    from mlops_assets_tests.test_serving_support import materialize_online, register, storage_for, trained

    storage = storage_for(tmp_path / "home")
    materialize_online(storage)
    v1 = register(storage, 25)  # gated and promoted through the guard
    t = trained()
    with HttpReceiver() as http:
        alerts = AlertsConfig.model_validate({"channels": [{"type": "webhook", "url": f"{http.url}/hook"}]})
        cfg = t.cfg.model_copy(update={"alerts": alerts})
        service = PredictionService(cfg, storage, ServiceOptions())
        try:
            service.watcher.check_once()
            assert service.slot.current.version == v1
            reg = ModelRegistry(cfg.model.name, storage)
            v2 = reg.register(
                t.pipelines[40],
                input_example=t.features[t.columns].head(3),
                feature_version=features_code_version(cfg),
            ).version  # registered through mlops_assets (sha256 and all) but never judged by the gates
            reg.client.set_registered_model_alias(cfg.model.name, CHAMPION, v2)  # as in the MLflow UI

            assert service.watcher.check_once() is False
            assert service.slot.current.version == v1  # the current model keeps serving
            assert f"refusing champion version {v2}" in service.slot.refusal
            assert "no gate record" in service.slot.refusal
            assert service.health()["model_version"] == v1
        finally:
            service.close()
    [alert] = http.events()
    assert (alert["event"], alert["version"], alert["severity"]) == ("service_degraded", v2, "critical")
    assert f"still serving version {v1}" in alert["summary"]


@pytest.mark.slow
def test_approval_required_a_real_run_waits_for_a_person(rainfall_slice, tmp_path, monkeypatch):
    """One real `mlops-assets run` (a subprocess, through Dagster's deployed_model step) with approval required:
    the gated challenger waits, a webhook and an email say so; approve makes it champion; reject leaves the
    champion untouched; a corrupt batch afterwards is one data-gate alert."""
    from mlops_assets.commands.status import status
    from mlops_assets.steps.promote import AWAITING_APPROVAL, promote

    with HttpReceiver() as http, SmtpReceiver(tmp_path) as smtp:
        alerts = {
            "links": {"dagster_url": "http://127.0.0.1:3000"},
            "channels": [
                {"type": "webhook", "url": f"{http.url}/hook", "secret_env": "TEST_HOOK_SECRET"},
                {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "ca_file": smtp.cert,
                    "username_env": "TEST_SMTP_USER",
                    "password_env": "TEST_SMTP_PASSWORD",
                    "sender": "mlops@example.com",
                    "to": ["team@example.com"],
                    "kinds": ["approval_requested", "data_gate_failed"],
                },
            ],
        }
        path, frame = rainfall_slice(years=5, name="appr", alerts=alerts, approval={"required": True})
        for name, value in {
            "TEST_HOOK_SECRET": "x",
            "TEST_SMTP_USER": "alerts",
            "TEST_SMTP_PASSWORD": "s3cret",
        }.items():
            monkeypatch.setenv(name, value)
        report = tmp_path / "report.json"
        proc = subprocess.run(
            [sys.executable, "-m", "mlops_assets.cli", "run", "--config", str(path), "--report", str(report)]
            + ["--no-progress"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        data = json.loads(report.read_text())
        cfg, storage = load_config(path), storage_from_env()
        reg = ModelRegistry.from_config(cfg, storage)
        assert data["status"] == "ok" and data["awaiting_approval"] == ["1"] and data["champion"] is None
        assert reg.aliases().get(CHAMPION) is None  # nothing serves the challenger before approval
        assert status(cfg, storage, triggers=False).awaiting_approval == ["1"]
        assert [e["event"] for e in http.events()] == ["approval_requested"]
        [mail] = smtp.messages
        assert mail["Subject"] == "[INFO] appr: challenger awaiting approval"
        assert "mlops-assets approve 1 --by NAME" in mail.get_content()

        assert (
            cli_main(["approve", "1", "--config", str(path), "--by", "alice", "--reason", "looks right"]) == 0
        )
        assert reg.aliases()[CHAMPION] == "1" and reg.history()[-1].moved_by == "alice"

        # A second cleared challenger through the real step function: it waits; reject leaves the champion.
        v2 = _toy(reg, 600)
        gate_passed(reg, v2)
        outcome = promote(reg, v2, reason="drift", run_id="run-2", approval_required=True)
        assert outcome.status == AWAITING_APPROVAL and reg.aliases()[CHAMPION] == "1"
        assert cli_main(["reject", v2, "--config", str(path), "--by", "bob", "--reason", "too soon"]) == 0
        assert reg.aliases()[CHAMPION] == "1" and reg.awaiting_approval() == []
        with pytest.raises(ApprovalError, match="already rejected by bob"):
            reg.approve(v2, by="carol")

        # The source turns bad in its last 50 months: the run is blocked before anything downstream, and one alert
        # per failed gate says which gate and partitions (not one per partition).
        from mlops_assets.commands.run import run

        bad = frame.copy()
        months = bad["date"].dt.strftime("%Y-%m")
        corrupt = sorted(months.unique())[-50:]
        bad.loc[months.isin(corrupt), "temperature"] = 1e6
        bad.assign(date=bad["date"].dt.strftime("%Y-%m-%d")).to_csv(path.parent / "appr.csv", index=False)
        blocked = run(cfg, storage, config_file=path)
        assert blocked.outcome.status == "blocked"

    events = http.events()
    assert [(e["event"], e["status"]) for e in events[:4]] == [
        ("approval_requested", "notice"),
        ("promoted", "notice"),
        ("approval_requested", "notice"),
        ("approval_decided", "notice"),
    ]
    gates = events[4:]  # one alert per failed data gate (each its own incident), not one per partition
    failed = [c["check"] for c in blocked.report["checks"] if not c["passed"]]
    assert [(e["event"], e["status"]) for e in gates] == [("data_gate_failed", "firing")] * len(failed)
    assert sorted(e["check"] for e in gates) == sorted(failed) and "raw_data_values_plausible" in failed
    plausible = next(e for e in gates if e["check"] == "raw_data_values_plausible")
    assert plausible["measured"] is not None and plausible["threshold"] is not None
    assert plausible["partition"] == f"{corrupt[0]}..{corrupt[-1]} (50 partitions)", plausible["partition"]
    assert plausible["links"]["dagster_run"] == f"http://127.0.0.1:3000/runs/{blocked.outcome.run_id}"
    mails = [m["X-Mlops-Event"] for m in smtp.messages]
    assert mails == ["approval_requested"] * 2 + ["data_gate_failed"] * len(failed)
    assert reg.aliases()[CHAMPION] == "1"


def test_a_promotion_carries_on_when_the_receiver_is_down_and_the_failure_is_recorded(tmp_path, capsys):
    from mlops_assets.steps.promote import promote

    with HttpReceiver() as gone:
        url = gone.url  # nothing listens there any more
    path = _bundled_with(
        tmp_path,
        alerts={
            "retry": {"attempts": 2, "backoff_seconds": 0},
            "channels": [{"type": "webhook", "url": f"{url}/hook", "name": "ops hook"}],
        },
    )
    reg = ModelRegistry.from_config(load_config(path), storage_from_env())
    v1 = _toy(reg, 300)
    gate_passed(reg, v1)

    outcome = promote(reg, v1, reason=None, run_id="run-1")  # the deployed_model step's function

    assert (outcome.version, outcome.reason) == (v1, "initial") and reg.aliases()[CHAMPION] == v1
    assert cli_main(["history", "--config", str(path), "--json"]) == 0
    [move] = json.loads(capsys.readouterr().out)["moves"]
    assert move["by"] == "pipeline (run run-1)" and move["gate_record"]["cleared"] is True
    [alert] = move["alerts"]
    assert (alert["kind"], alert["state"]) == ("promoted", "failed")
    [delivery] = alert["deliveries"]
    assert (
        delivery["channel"] == "ops hook"
        and delivery["attempts"] == 2
        and "Connection refused" in delivery["error"]
    )


def test_a_promotion_and_a_rollback_carry_on_when_the_receiver_is_slow(tmp_path, capsys, monkeypatch):
    """A receiver that answers only after 5 s, a channel that waits 0.3 s for it, two attempts: each champion move
    completes, its alert is recorded as failed after two timed-out attempts, and the alert costs the move at most
    attempts x timeout."""
    from mlops_assets.steps.promote import promote

    attempts, timeout = 2, 0.3
    # No backoff is configured; the slack covers connecting on loopback and recording (~0.02 s measured).
    bound = attempts * timeout + 0.3
    with HttpReceiver(delay=5.0) as slow:
        path = _bundled_with(
            tmp_path,
            alerts={
                "retry": {"attempts": attempts, "backoff_seconds": 0},
                "channels": [
                    {"type": "webhook", "url": f"{slow.url}/hook", "timeout_seconds": timeout, "name": "slow"}
                ],
            },
        )
        reg = ModelRegistry.from_config(load_config(path), storage_from_env())
        v1, v2 = _toy(reg, 300), _toy(reg, 600)
        gate_passed(reg, v1)
        gate_passed(reg, v2)
        assert reg.alerter is not None
        spent: list[float] = []
        notify = reg.alerter.notify

        def timed(event):
            t0 = time.perf_counter()
            try:
                return notify(event)
            finally:
                spent.append(time.perf_counter() - t0)

        monkeypatch.setattr(reg.alerter, "notify", timed)

        # The deployed_model step's function, then the Python API's promotion and rollback.
        assert promote(reg, v1, reason=None, run_id="run-1").version == v1
        reg.promote(v2, reason="better", by="alice")
        reg.rollback(reason="v2 misbehaves", by="bob")
        assert reg.aliases()[CHAMPION] == v1
        received = [e["event"] for e in slow.events()]

    # Every attempt reached the receiver and was given up on after the timeout, not refused.
    assert received == ["promoted"] * attempts + ["promoted"] * attempts + ["rolled_back"] * attempts
    assert len(spent) == 3 and all(attempts * timeout * 0.9 <= s <= bound for s in spent), (spent, bound)
    assert cli_main(["history", "--config", str(path), "--json"]) == 0
    moves = json.loads(capsys.readouterr().out)["moves"]
    assert [(m["version"], m["alerts"][0]["kind"], m["alerts"][0]["state"]) for m in moves] == [
        (v1, "promoted", "failed"),
        (v2, "promoted", "failed"),
        (v1, "rolled_back", "failed"),
    ]
    for move in moves:
        [delivery] = move["alerts"][0]["deliveries"]
        assert delivery["channel"] == "slow" and delivery["attempts"] == attempts
        assert "timed out" in delivery["error"], delivery["error"]


def test_the_ui_rollback_job_goes_through_the_guard(tmp_path):
    import dagster as dg

    from mlops_assets.defs.factory import build_model_defs

    path = _bundled_with(tmp_path)
    cfg = load_config(path)
    reg = ModelRegistry.from_config(cfg, storage_from_env())
    v1, v2 = _toy(reg, 300), _toy(reg, 600)
    gate_passed(reg, v2)
    reg.record_gate_results(v1, [{"gate": "robustness", "passed": False, "message": "flips under noise"}])
    reg.promote(v1, reason="initial", override=Override("carol", "bootstrap before the gates existed"))
    reg.promote(v2, reason="drift")
    job = build_model_defs(cfg, config_path=str(path)).resolve_job_def("mlops_model_rollback_job")
    instance = dg.DagsterInstance.ephemeral()

    def launch(**config):
        return job.execute_in_process(
            instance=instance,
            run_config={"ops": {"mlops_model_rollback": {"config": config}}},
            raise_on_error=False,
        )

    refused = launch()
    assert not refused.success and "release gates failed: robustness" in str(refused.all_events)
    assert reg.aliases()[CHAMPION] == v2
    assert not launch(override_reason="no name").success  # an override names its person
    assert launch(by="dave", override_reason="v2 times out in production").success
    last = reg.history()[-1]
    assert (last.version, last.moved_by, last.override_reason) == (v1, "dave", "v2 times out in production")
    assert reg.history()[0].override_reason == "bootstrap before the gates existed"
