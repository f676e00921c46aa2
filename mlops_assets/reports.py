"""Behind ``mlops-assets check-report`` (:mod:`mlops_assets.commands.check_report`): every asset check of the model's graph with its latest result, for people and CI.

The results come from the Dagster instance (``DAGSTER_HOME``, default ``$MLOPS_HOME/dagster``) that ``mlops-assets
run``, ``dagster dev`` and the daemon write to; the command reads it in this process and needs no daemon. Every
check the definitions declare is listed, including one that never executed (reported as such, never as passed).

Exit code: 1 when a blocking check's latest result failed with severity ERROR (what stops a Dagster run: a blocking
check that fails with WARN does not), 0 otherwise.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PASSED = "passed"
FAILED = "failed"
NEVER_EXECUTED = "never executed"


@dataclass(frozen=True)
class CheckRow:
    """One asset check and its latest completed evaluation (``status`` ``never executed`` when there is none)."""

    asset: str  # the asset key as a path string, e.g. ``mlops_model/raw_data``
    check: str
    status: str  # passed | failed | never executed
    blocking: bool
    severity: str | None  # ERROR | WARN, from the evaluation; None when never executed
    measured: Any
    threshold: Any
    description: str | None
    run_id: str | None
    evaluated_at: str | None  # ISO time of the evaluation
    # Set when the latest run that planned the check did not evaluate it (e.g. an upstream gate stopped the
    # run): the row then shows the last result there is, and the note says it is not from the latest run.
    skipped_in_run: str | None = None
    skipped_in_run_status: str | None = None

    @property
    def note(self) -> str | None:
        if self.skipped_in_run is None:
            return None
        return f"planned in run {self.skipped_in_run} ({self.skipped_in_run_status}) but not evaluated there"

    @property
    def passed(self) -> bool | None:
        return None if self.status == NEVER_EXECUTED else self.status == PASSED

    @property
    def blocks(self) -> bool:
        """Whether this result stops the graph: a blocking check whose latest result failed at ERROR."""
        return self.status == FAILED and self.blocking and self.severity == "ERROR"


def collect_check_rows(defs, instance) -> list[CheckRow]:
    """Every asset check declared in ``defs`` with its latest completed evaluation in ``instance``, in graph
    order (upstream assets first), then by check name."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    graph = defs.resolve_asset_graph()
    order = {key: i for i, key in enumerate(graph.toposorted_asset_keys)}
    keys = sorted(graph.asset_check_keys, key=lambda k: (order.get(k.asset_key, len(order)), k.name))
    summaries = instance.event_log_storage.get_asset_check_summary_records(keys)
    rows = []
    for key in keys:
        node = graph.get(key)
        summary = summaries.get(key)
        done = summary.last_completed_check_execution_record if summary else None
        latest = summary.last_check_execution_record if summary else None
        skipped = {}
        if latest is not None and latest.status == AssetCheckExecutionRecordStatus.PLANNED:
            run = instance.get_run_by_id(latest.run_id)
            skipped = {
                "skipped_in_run": latest.run_id,
                "skipped_in_run_status": run.status.value.lower() if run else "deleted",
            }
        evaluation = done.evaluation if done is not None else None
        if evaluation is None:
            rows.append(
                CheckRow(
                    asset=key.asset_key.to_user_string(),
                    check=key.name,
                    status=NEVER_EXECUTED,
                    blocking=bool(node.blocking),
                    severity=None,
                    measured=None,
                    threshold=None,
                    description=node.description,
                    run_id=None,
                    evaluated_at=None,
                    **skipped,
                )
            )
            continue
        assert done is not None  # an evaluation comes with its event
        md = evaluation.metadata
        rows.append(
            CheckRow(
                asset=key.asset_key.to_user_string(),
                check=key.name,
                status=PASSED if evaluation.passed else FAILED,
                blocking=bool(evaluation.blocking),
                severity=evaluation.severity.value,
                measured=_plain(md.get("measured")),
                threshold=_plain(md.get("threshold")),
                description=evaluation.description or node.description,
                run_id=done.run_id,
                evaluated_at=datetime.fromtimestamp(done.event.timestamp, UTC).isoformat(timespec="seconds"),
                **skipped,
            )
        )
    return rows


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render_junit(rows: list[CheckRow], suite: str) -> str:
    """JUnit XML: one testsuite, a testcase per check (classname = asset, name = check); a ``failure`` element for
    a failed check (``type`` says whether it blocks), ``skipped`` for one never executed."""
    failures = sum(r.status == FAILED for r in rows)
    skipped = sum(r.status == NEVER_EXECUTED for r in rows)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    root = ET.Element("testsuites", name="mlops-assets check-report", tests=str(len(rows)))
    root.set("failures", str(failures))
    root.set("errors", "0")
    root.set("skipped", str(skipped))
    root.set("time", "0")
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(rows)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time="0",
        timestamp=stamp,
    )
    for r in rows:
        case = ET.SubElement(ts, "testcase", classname=r.asset.replace("/", "."), name=r.check, time="0")
        detail = _detail(r)
        if r.status == FAILED:
            kind = "blocking" if r.blocks else "non-blocking"
            el = ET.SubElement(
                case,
                "failure",
                message=f"{r.check} failed ({r.severity}, {kind}): measured {_fmt(r.measured) or 'n/a'}, "
                f"threshold {_fmt(r.threshold) or 'n/a'}",
                type=f"AssetCheckFailed.{r.severity}",
            )
            el.text = detail
        elif r.status == NEVER_EXECUTED:
            ET.SubElement(case, "skipped", message="never executed" + (f": {r.note}" if r.note else ""))
        out = ET.SubElement(case, "system-out")
        out.text = detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _detail(r: CheckRow) -> str:
    lines = [
        f"asset: {r.asset}",
        f"check: {r.check}",
        f"result: {r.status}",
        f"severity: {r.severity or ''}",
        f"blocking: {str(r.blocking).lower()}",
        f"measured: {_fmt(r.measured)}",
        f"threshold: {_fmt(r.threshold)}",
        f"run: {r.run_id or ''}",
        f"evaluated at: {r.evaluated_at or ''}",
    ]
    if r.note:
        lines.append(f"note: {r.note}")
    if r.description:
        lines.append(f"description: {r.description}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: list[CheckRow], title: str) -> str:
    """A Markdown summary line and table, one row per check (what a CI job summary or a PR comment shows)."""
    passed = sum(r.status == PASSED for r in rows)
    failed = [r for r in rows if r.status == FAILED]
    never = sum(r.status == NEVER_EXECUTED for r in rows)
    blocking = [r for r in failed if r.blocks]
    verdict = (
        f"**BLOCKED**: {', '.join(f'`{r.check}`' for r in blocking)}"
        if blocking
        else "no blocking check failed"
    )
    lines = [
        f"# Asset checks: {title}",
        "",
        f"{len(rows)} checks: {passed} passed, {len(failed)} failed, {never} never executed. {verdict}.",
        "",
        "| asset | check | result | severity | blocking | measured | threshold | evaluated at | run |",
        "|---|---|---|---|---|---:|---:|---|---|",
    ]
    marks = {PASSED: "✅ passed", FAILED: "❌ failed", NEVER_EXECUTED: "⚪ never executed"}
    for r in rows:
        result = marks[r.status]
        if r.skipped_in_run:
            result += (
                f" (not evaluated in the latest run `{r.skipped_in_run[:8]}`, {r.skipped_in_run_status})"
            )
        cells = [
            f"`{r.asset}`",
            f"`{r.check}`",
            result,
            r.severity or "",
            "yes" if r.blocking else "no",
            _fmt(r.measured),
            _fmt(r.threshold),
            r.evaluated_at or "",
            f"`{r.run_id[:8]}`" if r.run_id else "",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_text(rows: list[CheckRow]) -> str:
    width = max((len(r.asset) + len(r.check) for r in rows), default=0) + 1
    lines = []
    for r in rows:
        name = f"{r.asset}.{r.check}"
        label = {PASSED: "PASS", FAILED: "FAIL", NEVER_EXECUTED: "NEVER RUN"}[r.status]
        extra = ""
        if r.status != NEVER_EXECUTED:
            extra = f"  {r.severity}{' blocking' if r.blocking else ''}"
            if r.measured is not None or r.threshold is not None:
                extra += f"  measured {_fmt(r.measured) or 'n/a'} / threshold {_fmt(r.threshold) or 'n/a'}"
        lines.append(f"{label:<9}  {name:<{width}}{extra}")
    return "\n".join(lines)
