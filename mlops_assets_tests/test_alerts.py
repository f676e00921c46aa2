"""The alerts package alone (no Dagster): real deliveries to a webhook receiver and an SMTP server on loopback,
routing, retries against a receiver that is down, one alert per incident and its all-clear, config errors."""

from __future__ import annotations

import json

import pytest

from mlops_assets.alerts import Alerter, AlertEvent, AlertsConfig, MemoryLedger
from mlops_assets.alerts.checks import alert_on_checks
from mlops_assets.config import ConfigError, load_config, parse_config
from mlops_assets.registry.history import DeploymentHistory
from mlops_assets_tests.support import HttpReceiver, SmtpReceiver, signature_ok

SECRET = "hook-secret"


def _config(**alerts) -> AlertsConfig:
    return AlertsConfig.model_validate(alerts)


def test_webhook_slack_and_email_receive_the_event(tmp_path):
    event = AlertEvent(
        kind="release_gate_failed",
        model="rain",
        summary="rain: the challenger failed release gate(s) latency; the champion is unchanged",
        check="trained_model_passes_latency",
        measured=120.0,
        threshold=50.0,
        version="7",
        run_id="abc123",
    )
    with HttpReceiver() as http, SmtpReceiver(tmp_path) as smtp:
        cfg = _config(
            links={"dagster_url": "http://dagster.local:3000", "mlflow_url": "http://mlflow.local"},
            channels=[
                {"type": "webhook", "url": f"{http.url}/hook", "secret_env": "HOOK_SECRET"},
                {"type": "slack", "url_env": "SLACK_URL", "min_severity": "warning"},
                {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "ca_file": smtp.cert,
                    "username_env": "SMTP_USER",
                    "password_env": "SMTP_PASSWORD",
                    "sender": "mlops@example.com",
                    "to": ["oncall@example.com"],
                    "kinds": ["release_gate_failed"],
                },
            ],
        )
        env = {
            "HOOK_SECRET": SECRET,
            "SLACK_URL": f"{http.url}/slack",
            "SMTP_USER": "alerts",
            "SMTP_PASSWORD": "s3cret",
        }
        ledger = MemoryLedger()
        record = Alerter(cfg, ledger, environ=env).notify(event)
        # A notice below the Slack channel's severity and outside the email channel's kinds: webhook only.
        Alerter(cfg, ledger, environ=env).notify(
            AlertEvent(kind="promoted", model="rain", summary="v8 promoted")
        )

    assert record.state == "sent" and [d.ok for d in record.deliveries] == [True, True, True]
    [hook, notice] = [r for r in http.received if r["path"] == "/hook"]
    body = hook["json"]
    assert body["event"] == "release_gate_failed" and body["model"] == "rain"
    assert (body["measured"], body["threshold"], body["version"], body["run_id"]) == (
        120.0,
        50.0,
        "7",
        "abc123",
    )
    assert body["links"] == {
        "dagster_run": "http://dagster.local:3000/runs/abc123",
        "mlflow_version": "http://mlflow.local/#/models/rain/versions/7",
    }
    assert signature_ok(hook, SECRET) and not signature_ok(hook, "another-secret")
    assert notice["json"]["event"] == "promoted"
    [slack] = http.events("/slack")
    assert "[WARNING] rain: release gate failed" in slack["text"] and "measured: 120.0" in slack["text"]
    [mail] = smtp.messages
    assert mail["Subject"] == "[WARNING] rain: release gate failed" and mail["To"] == "oncall@example.com"
    assert (
        "threshold: 50.0" in mail.get_content()
        and "http://dagster.local:3000/runs/abc123" in mail.get_content()
    )


def test_a_receiver_that_is_down_is_retried_recorded_and_never_raises(tmp_path):
    with HttpReceiver() as http:
        url = http.url  # a port nothing listens on once the receiver is closed
    waits: list[float] = []
    history = DeploymentHistory(f"sqlite:///{tmp_path / 'history.db'}")
    cfg = _config(
        channels=[{"type": "webhook", "url": f"{url}/hook"}], retry={"attempts": 3, "backoff_seconds": 0.5}
    )
    event = AlertEvent(kind="data_gate_failed", model="rain", summary="corrupt batch", check="raw_data_x")
    record = Alerter(cfg, history, sleep=waits.append).notify(event)

    assert record.state == "failed" and waits == [0.5, 1.0]
    [delivery] = record.deliveries
    assert not delivery.ok and delivery.attempts == 3 and "Connection refused" in delivery.error
    [row] = history.alerts("rain")
    assert row["state"] == "failed" and row["deliveries"][0]["error"] == delivery.error
    # Not delivered, so the next occurrence of the incident is sent again (not suppressed as a repeat).
    with HttpReceiver() as up:
        cfg2 = _config(channels=[{"type": "webhook", "url": f"{up.url}/hook"}])
        again = Alerter(cfg2, history).notify(event)
    assert again.state == "sent" and [e["event"] for e in up.events()] == ["data_gate_failed"]
    # A secret that is not set fails at once (retrying cannot help), named in the record.
    missing = _config(channels=[{"type": "slack", "url_env": "NOT_SET_ANYWHERE"}])
    rec = Alerter(missing, MemoryLedger(), environ={}, sleep=waits.append).notify(event)
    assert (
        rec.state == "failed"
        and rec.deliveries[0].attempts == 1
        and "NOT_SET_ANYWHERE" in rec.deliveries[0].error
    )


def test_a_backfill_with_a_corrupt_column_is_one_alert_then_one_all_clear(tmp_path):
    history = DeploymentHistory(f"sqlite:///{tmp_path / 'history.db'}")
    failing = {
        "asset": "raw_data",
        "check": "raw_data_values_plausible",
        "passed": False,
        "blocking": True,
        "metadata": {"measured": 0.4, "threshold": 0.1, "message": "40% of rows out of range"},
    }
    with HttpReceiver() as http:
        alerter = Alerter(_config(channels=[{"type": "webhook", "url": f"{http.url}/hook"}]), history)
        # 50 partitions, as one backfill run or as 50 runs of one partition each: one incident.
        first = alert_on_checks(
            alerter,
            "rain",
            [
                failing
                | {"metadata": failing["metadata"] | {"failing_partitions": [f"p{i:02d}" for i in range(50)]}}
            ],
            "run-0",
        )
        for i in range(1, 50):
            alert_on_checks(
                alerter, "rain", [failing | {"metadata": {"failing_partitions": [f"p{i:02d}"]}}], f"run-{i}"
            )
        alert_on_checks(alerter, "rain", [failing | {"passed": True}], "run-ok")

    events = http.events()
    assert [(e["event"], e["status"]) for e in events] == [
        ("data_gate_failed", "firing"),
        ("data_gate_failed", "resolved"),
    ]
    assert events[0]["partition"] == "p00..p49 (50 partitions)" and events[0]["measured"] == 0.4
    assert first[0].state == "sent"
    states = [a["state"] for a in history.alerts("rain")]
    assert states == ["sent"] + ["suppressed"] * 49 + ["resolved"]


def test_alerts_config_errors_name_the_key():
    base = {"dataset": {"source": "x.csv", "timestamp_column": "t", "label_column": "y"}}
    cases = {
        "alerts.channels.0.webhook.url": {"channels": [{"type": "webhook", "url": "ftp://x"}]},
        "secret itself never goes in the file": {
            "channels": [{"type": "webhook", "url": "http://x", "secret_env": "abc def"}]
        },
        "exactly one of url or url_env": {"channels": [{"type": "slack"}]},
        "unknown event kinds ['promotion']": {
            "channels": [{"type": "webhook", "url": "http://x", "kinds": ["promotion"]}]
        },
        "only over STARTTLS": {
            "channels": [
                {
                    "type": "email",
                    "host": "h",
                    "sender": "a@b",
                    "to": ["c@d"],
                    "starttls": False,
                    "username_env": "U",
                    "password_env": "P",
                }
            ]
        },
        "unknown key 'alerts.routes'": {"routes": []},
    }
    for expected, alerts in cases.items():
        with pytest.raises(ConfigError) as err:
            parse_config({**base, "alerts": alerts})
        assert expected in str(err.value), (expected, str(err.value))
    with pytest.raises(ConfigError, match="approval.expires_after"):
        parse_config({**base, "approval": {"required": True, "expires_after": "1M"}})
    json.dumps(parse_config({**base, "alerts": {}}).alerts.model_dump())  # the default: no channel


def test_the_check_sensor_alerts_a_failed_non_blocking_check_that_fails_no_run(tmp_path, isolated_storage):
    """dagster#29896: a failed non-blocking check (the drift check) leaves the run successful, so no run-failure
    sensor hears of it; the event-log sensor does, once per incident."""
    import dagster as dg

    from mlops_assets.defs.alerting import build_alert_sensors
    from mlops_assets.defs.resources import MlopsProject
    from mlops_assets_tests.test_champion_guard import _bundled_with

    key = dg.AssetKey(["watched", "features"])

    @dg.asset(
        key=key,
        check_specs=[dg.AssetCheckSpec("features_match_champion_profile", asset=key, blocking=False)],
    )
    def features():
        yield dg.Output(1)
        yield dg.AssetCheckResult(
            check_name="features_match_champion_profile",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"measured": 2.0, "threshold": 0.0, "partition": "1999-02"},
        )

    with HttpReceiver() as http:
        path = _bundled_with(
            tmp_path,
            model={"name": "watched"},
            alerts={"channels": [{"type": "webhook", "url": f"{http.url}/hook"}]},
        )
        sensor = build_alert_sensors(load_config(path), ["watched"])[0]
        instance = dg.DagsterInstance.ephemeral()
        project = MlopsProject(config_path=str(path))
        for _ in range(2):
            assert dg.materialize([features], instance=instance).success  # the run succeeds
        ctx = dg.build_sensor_context(instance=instance, resources={"project": project})
        first = sensor(ctx)
        cursor = ctx.cursor
        again = sensor(
            dg.build_sensor_context(instance=instance, cursor=cursor, resources={"project": project})
        )

    assert "2 check result(s) read, 1 alert(s) sent" in first.skip_message  # two runs, one incident
    assert again.skip_message == "no new check results"
    [alert] = http.events()
    assert (alert["event"], alert["check"], alert["partition"], alert["measured"]) == (
        "drift_detected",
        "features_match_champion_profile",
        "1999-02",
        2.0,
    )
