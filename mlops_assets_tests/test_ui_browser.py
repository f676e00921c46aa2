"""The Dagster UI in a real browser: a real ``dagster-webserver`` on loopback over an instance where a small run
happened, driven by headless Chromium (Playwright); GraphQL on the same server asserts the same facts.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it); ``MLOPS_CHROMIUM`` names another
binary (e.g. Google Chrome on a GitHub runner).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import load_config
from mlops_assets.defs.factory import build_model_defs
from mlops_assets.runner import execute, instance_for
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.conftest import module_home, use_home, write_slice

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHAIN = ["raw_data", "validated_data", "features", "trained_model", "deployed_model"]
# The README's screenshot. A test run leaves the working tree alone: the screenshot goes to the test's tmp dir,
# and into docs/ only with MLOPS_UPDATE_SCREENSHOT=1 (then commit it).
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui-asset-graph.png"
MODEL = "ui"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    resp = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    resp.raise_for_status()
    body = resp.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


def _wait_until_loaded(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            entries = graphql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(
        f"dagster-webserver did not load the code location in {timeout} s:\n{log.read_text()[-3000:]}"
    )


@pytest.fixture(autouse=True)
def patient_expect():
    """Playwright's assertions wait 5 s by default: too short for a page of a webserver on a loaded 2-core
    machine. Every expect in this module waits up to 60 s."""
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    yield
    expect.set_options(timeout=5_000)


@pytest.fixture(scope="module")
def webserver(rainfall, migrated_mlflow_db, tmp_path_factory):
    """A small run into the instance of a home of the module's own, then ``dagster-webserver -m
    mlops_assets.definitions`` on 127.0.0.1 and a free port with MLOPS_CONFIG at the same small config. One server
    for the module's tests (starting it and the run take about a minute). Yields (url, config path, run outcome,
    home); a test that uses the home's storage points MLOPS_HOME and DAGSTER_HOME at it (:func:`use_home`)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set MLOPS_CHROMIUM)")
    tmp_path = tmp_path_factory.mktemp("ui")
    with module_home(tmp_path, migrated_mlflow_db) as home:
        path, _ = write_slice(tmp_path, rainfall, years=3, name=MODEL)
        storage = storage_from_env().ensure()
        outcome = execute(
            load_config(path), config_file=str(path), storage=storage, instance=instance_for(storage)
        )
        assert outcome.status == "ok", outcome.error
        yield from _serve(path, outcome, home, tmp_path)


def _serve(path: Path, outcome, home: Path, tmp_path: Path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLOPS_CONFIG": str(path), "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true"}
    log = tmp_path / "webserver.log"
    exe = Path(sys.executable).with_name("dagster-webserver")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(exe), "-m", "mlops_assets.definitions", "-h", "127.0.0.1", "-p", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server it spawns goes down with it
        )
    try:
        _wait_until_loaded(url, proc, log)
        yield url, path, outcome, home
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _open(pw, *, width: int, height: int):
    """Headless Chromium and a page of ``width`` x ``height`` whose actions wait up to 60 s."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(60_000)
    return browser, page


def _skip_welcome(page, ready) -> None:
    """Skip the community dialog the UI shows on an instance's first visit (once per instance: the module's first
    test skips it), if it shows; ``ready`` is something the page shows once loaded."""
    skip = page.get_by_role("button", name="Skip")
    ready.or_(skip).first.wait_for()
    if skip.is_visible():
        skip.click()


def _declared_checks(config_path) -> dict[str, set[str]]:
    graph = build_model_defs(load_config(config_path), config_path=str(config_path)).resolve_asset_graph()
    out: dict[str, set[str]] = {}
    for key in graph.asset_check_keys:
        out.setdefault(key.asset_key.path[-1], set()).add(key.name)
    return out


def _graph_edges(page) -> set[tuple[str, str]]:
    """Lineage as drawn: each edge path of the asset graph's SVG joined to the node boxes at its two ends."""
    names = [*CHAIN, "model_performance"]
    nodes = page.evaluate(
        """(names) => [...document.querySelectorAll('svg foreignObject')].map(f => ({
            x: +f.getAttribute('x'), y: +f.getAttribute('y'),
            w: +f.getAttribute('width'), h: +f.getAttribute('height'),
            names: [...new Set([...f.querySelectorAll('*')]
                .filter(el => el.children.length === 0 && names.includes(el.textContent.trim()))
                .map(el => el.textContent.trim()))]}))""",
        names,
    )
    paths = page.evaluate(
        """() => [...document.querySelectorAll('svg path[marker-end]')].map(p => p.getAttribute('d'))"""
    )
    boxes = [(n["names"][0], n) for n in nodes if len(n["names"]) == 1]

    def at(x: float, y: float) -> str | None:
        near = [
            name
            for name, n in boxes
            if n["x"] - 15 <= x <= n["x"] + n["w"] + 15 and n["y"] - 15 <= y <= n["y"] + n["h"] + 15
        ]
        return near[0] if len(near) == 1 else None

    edges = set()
    for d in paths:
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
        src, dst = at(nums[0], nums[1]), at(nums[-2], nums[-1])
        if src and dst:
            edges.add((src, dst))
    return edges


ASSETS_QUERY = """{ assetNodes { assetKey { path } dependencyKeys { path }
  assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""
RUNS_QUERY = """{ runsOrError { ... on Runs { results { runId status assetSelection { path }
  tags { key value } } } } }"""


def test_asset_graph_checks_and_a_launch_from_the_ui(webserver, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, config_path, outcome, _home = webserver
    declared = _declared_checks(config_path)

    # GraphQL first: the graph the server loaded.
    nodes = {tuple(n["assetKey"]["path"]): n for n in graphql(url, ASSETS_QUERY)["assetNodes"]}
    assert {(MODEL, name) for name in CHAIN} <= set(nodes)
    for up, down in zip(CHAIN, CHAIN[1:], strict=False):
        assert [MODEL, up] in [d["path"] for d in nodes[(MODEL, down)]["dependencyKeys"]]
    for asset, checks in declared.items():
        served = {c["name"]: c for c in nodes[(MODEL, asset)]["assetChecksOrError"]["checks"]}
        assert set(served) == checks
    assert all(c["blocking"] for c in nodes[(MODEL, "raw_data")]["assetChecksOrError"]["checks"])

    with sync_playwright() as pw:
        # Wide enough that the fitted graph shows whole nodes (checks, partitions), not just names.
        browser, page = _open(pw, width=2000, height=520)
        try:
            page.goto(f"{url}/asset-groups")
            # The module's first visit to a fresh instance: the community dialog. Skip it.
            page.get_by_role("button", name="Skip").click()
            page.get_by_role("button", name="Hide navigation").click()
            page.locator("svg foreignObject").filter(has_text="deployed_model").first.wait_for()

            def node(name):
                return page.locator("svg foreignObject").filter(has=page.get_by_text(name, exact=True))

            for name in CHAIN:
                expect(node(name)).to_have_count(1)
            # The raw_data and trained_model nodes show their checks, all passed in the run.
            for asset in ("raw_data", "trained_model"):
                n = len(declared[asset])
                expect(node(asset)).to_contain_text(f"{n} / {n} Passed")
            edges = _graph_edges(page)
            assert set(zip(CHAIN, CHAIN[1:], strict=False)) <= edges, edges
            shot = tmp_path / "ui-asset-graph.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("MLOPS_UPDATE_SCREENSHOT") == "1":
                DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                DOCS_SCREENSHOT.write_bytes(shot.read_bytes())

            # Each check by name on its asset's Checks tab.
            for asset, checks in declared.items():
                page.goto(f"{url}/assets/{MODEL}/{asset}?view=checks")
                for check in checks:
                    expect(page.get_by_text(check, exact=True).first).to_be_visible()

            # Launch a materialization of trained_model from its page.
            page.goto(f"{url}/assets/{MODEL}/trained_model")
            page.get_by_role("button").filter(has_text=re.compile(r"^Materialize$")).click()
            toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
            expect(toast).to_be_visible()
            prefix = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
        finally:
            browser.close()

    runs = graphql(url, RUNS_QUERY)["runsOrError"]["results"]
    launched = [r for r in runs if r["runId"].startswith(prefix)]
    assert len(launched) == 1, runs
    run = launched[0]
    assert run["runId"] != outcome.run_id
    assert run["assetSelection"] == [{"path": [MODEL, "trained_model"]}]
    assert {"key": "dagster/from_ui", "value": "true"} in run["tags"]
    # The embedded instance queues runs (QueuedRunCoordinator); without a daemon the run waits in the queue.
    assert run["status"] in {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "SUCCESS"}


def test_deployed_model_shows_the_champion_a_cli_rollback_moved_to(webserver, monkeypatch):
    """The newcomer's report: after ``mlops-assets rollback`` the UI still showed the old champion. Here v2 is
    promoted and recorded as a run of deployed_model would, the page shows it; then the real CLI rolls back and the
    same page, reloaded, names v1 and who moved it."""
    from playwright.sync_api import expect, sync_playwright
    from sklearn.linear_model import LogisticRegression

    from mlops_assets.defs.champion import record_champion
    from mlops_assets.registry.model_registry import CHAMPION, ModelRegistry
    from mlops_assets_tests.support import gate_passed

    url, config_path, _outcome, home = webserver
    use_home(monkeypatch, home)
    cfg = load_config(config_path)
    storage = storage_from_env()
    reg = ModelRegistry.from_config(cfg, storage)
    v1 = str(reg.aliases()[CHAMPION])
    X = pd.DataFrame({"x": np.arange(40.0)})
    v2 = reg.register(
        LogisticRegression().fit(X, (X["x"] > 20).astype(int)),
        input_example=X.head(3),
        feature_version=reg.feature_version,
    ).version
    v2 = str(v2)
    gate_passed(reg, v2)
    reg.promote(v2, reason="drift", run_id=None)
    with instance_for(storage) as instance:
        record_champion(instance, reg.history(limit=1)[-1], recorded_by="test")

    with sync_playwright() as pw:
        browser, page = _open(pw, width=1600, height=1000)
        try:
            page.goto(f"{url}/assets/{MODEL}/deployed_model")

            def cell(key: str):
                """The value cell of ``key``'s row in the asset's latest-materialization metadata table."""
                return page.locator("tr").filter(has=page.get_by_text(key, exact=True)).locator("td").last

            def shows(key: str, value: str) -> None:
                expect(cell(key)).to_have_text(value)

            _skip_welcome(page, cell("champion_version"))

            shows("champion_version", v2)
            shows("reason", "drift")

            env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "DAGSTER_"))}
            env.update(MLOPS_HOME=str(storage.home), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
            proc = subprocess.run(
                [sys.executable, "-m", "mlops_assets.cli", "rollback", "--config", str(config_path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert f"champion is now version {v1} (was version {v2})" in proc.stdout

            page.reload()
            shows("champion_version", v1)
            shows("previous", v2)
            shows("reason", "rollback")
            shows("recorded_by", "mlops-assets rollback")
        finally:
            browser.close()
