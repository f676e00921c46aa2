"""Tokens of the prediction service without a server: parsing MLOPS_SERVE_TOKENS, scopes, generated tokens,
--insecure-local on loopback only (the HTTP behaviour: test_serving_api.py)."""

from __future__ import annotations

import pytest

from mlops_assets.cli import main
from mlops_assets.commands.serve import service_auth
from mlops_assets.serving.auth import Auth, AuthConfigError, check_insecure_host


def test_tokens_grant_their_scopes_and_admin_grants_all():
    auth = Auth.parse(" predict:p1 , feedback:f1,admin:a1,feedback:p1")
    assert auth.check(b"Bearer p1", "predict") is None
    assert auth.check(b"bearer p1", "feedback") is None  # the same token listed under two scopes
    assert auth.check(b"Bearer f1", "predict").status == 403
    assert auth.check(b"Bearer f1", "admin").status == 403
    assert all(auth.check(b"Bearer a1", s) is None for s in ("predict", "feedback", "admin"))
    assert auth.check(None, "predict").status == 401
    assert auth.check(b"Bearer p1x", "predict").status == 401
    assert auth.check(b"Bearer \xff\xfe", "predict").status == 401  # bytes that are no token: no crash
    assert Auth.insecure().check(None, "admin") is None


@pytest.mark.parametrize("text", ["predict", "reader:tok-secret-1", "predict:", "predict:has space", " , "])
def test_bad_token_settings_are_refused_without_echoing_a_token(text):
    with pytest.raises(AuthConfigError, match="MLOPS_SERVE_TOKENS") as info:
        Auth.parse(text)
    assert "tok-secret-1" not in str(info.value) and "has space" not in str(info.value)


def test_without_tokens_serve_generates_them_prints_them_once_and_requires_them(capsys):
    auth = service_auth("127.0.0.1", False, {})
    out = capsys.readouterr().out
    assert auth.enabled and len(auth.tokens) == 3
    for scope, token in auth.tokens:
        assert out.count(token.decode()) == 1
        assert auth.check(b"Bearer " + token, scope) is None
    assert auth.check(None, "predict").status == 401
    assert service_auth("127.0.0.1", False, {}).tokens != auth.tokens  # random per start
    configured = service_auth("127.0.0.1", False, {"MLOPS_SERVE_TOKENS": "predict:abc"})
    assert capsys.readouterr().out.count("abc") == 0 and not configured.generated


def test_insecure_local_only_on_loopback(capsys):
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_insecure_host(host)
        assert not service_auth(host, True, {"MLOPS_SERVE_TOKENS": "predict:abc"}).enabled
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.com"):
        with pytest.raises(AuthConfigError, match="loopback"):
            check_insecure_host(host)
    # The command refuses before loading anything.
    assert main(["serve", "--insecure-local", "--host", "10.1.2.3"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert main(["serve", "--tls-cert", "/nonexistent.pem"]) == 2


def test_host_names_are_read_without_their_port():
    from mlops_assets.serving.app import _host_name

    assert _host_name("127.0.0.1:8000") == "127.0.0.1"
    assert _host_name("[::1]:8000") == "::1" and _host_name("[::1]") == "::1"
    assert _host_name("LocalHost") == "localhost"


def test_a_label_budget_refills_at_its_rate_per_caller():
    from mlops_assets.serving.ratelimit import LabelBudget

    now = [0.0]
    budget = LabelBudget(100, 10.0, max_keys=3, clock=lambda: now[0])
    assert budget.take(b"Bearer a", 60) is None
    assert budget.take(b"Bearer a", 60) == pytest.approx(2.0)  # 40 left: 20 short at 10 a second
    assert budget.take(b"Bearer b", 100) is None  # another caller, another bucket
    now[0] = 2.0
    assert budget.take(b"Bearer a", 60) is None  # refilled to 60
    assert budget.take(b"Bearer a", 1) == pytest.approx(0.1)
    now[0] = 1_000.0
    assert (
        budget.take(b"Bearer a", 500) is None
    )  # larger than the bucket: allowed from a full one, empties it
    assert budget.take(b"Bearer a", 1) == pytest.approx(0.1)
    for caller in (b"c", b"d", b"e"):
        budget.take(caller, 1)
    assert len(budget._buckets) == 3  # the fullest forgotten first: a new bucket starts full anyway
    assert all(b"Bearer" not in key for key in budget._buckets)  # kept under a hash, never the token


def test_the_live_metric_rule_rolls_back_a_collapse_and_rarely_a_healthy_model():
    """The probation's live ROC AUC rule on scores of a known quality (AUC about 0.80 for both champions, or the
    new one turned around): a healthy new champion judged on 200 labels is rolled back in under 1 % of draws; a
    collapsed one always; fewer labels than required, or one class, are not judged."""
    import numpy as np

    from mlops_assets.serving.probation import auc_standard_error, live_auc_breach

    def draw(rng, n, turned=False):
        y = (rng.random(n) < 0.3).astype(int)
        s = rng.normal(1.19 * y, 1.0)  # AUC = Phi(1.19 / sqrt 2), about 0.80
        return y.tolist(), (-s if turned else s).tolist()

    rng = np.random.default_rng(0)
    healthy = [live_auc_breach(*draw(rng, 200), *draw(rng, 200), 0.1, 200)[0] for _ in range(500)]
    assert sum(b is not None for b in healthy) / len(healthy) < 0.01
    for _ in range(20):
        breach, figures = live_auc_breach(*draw(rng, 200, turned=True), *draw(rng, 200), 0.1, 200)
        assert breach is not None and "live ROC AUC" in breach
        assert figures["live_roc_auc"] < 0.35 < 0.7 < figures["previous_live_roc_auc"]
    assert live_auc_breach(*draw(rng, 150, turned=True), *draw(rng, 200), 0.1, 200)[0] is None
    assert live_auc_breach([0] * 300, [0.1] * 300, *draw(rng, 300), 0.1, 200)[0] is None
    # Hanley and McNeil's example: AUC 0.80 on 50 positives and 50 negatives, standard error about 0.044.
    assert auc_standard_error(0.8, 50, 50) == pytest.approx(0.0438, abs=0.001)
