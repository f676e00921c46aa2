"""The source's shape, checked before a command stores anything: one clear error instead of a failed run.

``mlops-assets run`` calls :func:`check_source` before it creates any state or imports Dagster, so a user's
first mistakes (an empty file, a header without rows, a ``;``-separated file, a missing label column, a label
spelled differently from the data, a label column with one class in every row, a timestamp that does not parse,
another dataset under a model name already used in the same ``MLOPS_HOME``) cost a second and leave everything as
it was. Each error is a :class:`~mlops_assets.data.sources.SourceError` (a :class:`~mlops_assets.config.ConfigError`:
exit code 2) whose message names the file, column or key and says what to do.

Only the first rows are read (:data:`PEEK_ROWS`), and the label column alone beyond them when they hold one class;
what needs the whole source is the data contract's business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.config import MlopsConfig
from mlops_assets.data.labels import is_label, positive_label_problem
from mlops_assets.data.source_state import recorded_state, source_identity
from mlops_assets.data.sources import FileSource, Source, SourceError, open_source

PEEK_ROWS = 1000
# Separators a spreadsheet or a database export may use instead of a comma.
_SEPARATORS = {";": "semicolon", "\t": "tab", "|": "pipe"}
# The data contract learned by ingestion, beside the stored partitions ($MLOPS_HOME/<model>/).
CONTRACT_FILE = "data_contract.json"


@dataclass(frozen=True)
class SourcePreview:
    """What the check saw: the source's columns and its first rows (timestamps UTC)."""

    columns: list[str]
    head: pd.DataFrame


def check_source(cfg: MlopsConfig, home: Path | None, config_file: str | Path | None = None) -> SourcePreview:
    """Check that ``cfg``'s source can be ingested under ``cfg.model.name`` in ``home`` ($MLOPS_HOME): files exist
    and are not empty, columns are separated and named as configured, the first rows parse and hold the configured
    label, and the model's stored state (if any) comes from this dataset (``home=None``: a command that keeps no
    state, such as the replay, skips that). Reads the first rows only; writes nothing. Raises
    :class:`SourceError` naming the file, column or key, and what to do."""
    source = open_source(cfg)  # a missing file or an unsupported type: an error here, before any read
    where = str(config_file) if config_file else "mlops.yaml"
    if isinstance(source, FileSource):
        for path in source.files:
            if path.stat().st_size == 0:
                raise SourceError(
                    f"{path}: the file is empty (0 bytes): export the data again, a header row then one row per "
                    "event"
                )
        _check_separator(source)
    head = source.peek(PEEK_ROWS)
    if head.empty and isinstance(source, FileSource) and len(source.files) == 1:
        raise SourceError(
            f"{source.files[0]}: a header row but no data rows (columns: {list(head.columns)}): add the rows, "
            "one per event"
        )
    if head.empty and not isinstance(source, FileSource):
        raise SourceError(f"dataset.source {source.describe()!r}: the query returns no rows")
    _check_named_columns(cfg, head, where)
    _check_label_classes(cfg, source, head, where)
    if home is not None:
        _check_same_dataset(cfg, home, list(head.columns), where)
    return SourcePreview(columns=list(head.columns), head=head)


def _check_label_classes(cfg: MlopsConfig, source: Source, head: pd.DataFrame, where: str) -> None:
    """The label column holds two classes, one of them ``positive_label``. The first rows decide when they hold
    two classes; otherwise the label column alone is read on until a second class (and the positive label) turns
    up: the earliest periods may hold one class only, a source that holds one class in every row cannot train a
    binary model."""
    ds = cfg.dataset
    labels = head[ds.label_column].dropna().unique().tolist()
    if len(set(labels)) < 2:
        labels = source.label_values(
            lambda seen: len(seen) > 2 or (len(seen) == 2 and is_label(ds.positive_label, seen))
        )
    if len(labels) == 1:
        (only,) = labels
        never = (
            ""
            if is_label(ds.positive_label, labels)
            else f", and dataset.positive_label {ds.positive_label!r} never occurs"
        )
        origin = source.files[0] if isinstance(source, FileSource) and len(source.files) == 1 else None
        raise SourceError(
            f"{origin or source.describe()}: label column {ds.label_column!r} holds one class in every row "
            f"({only!r}){never}: a binary model needs both classes; check dataset.label_column and "
            f"dataset.positive_label in {where}, or add rows of the other class"
        )
    problem = positive_label_problem(ds.positive_label, labels)
    if problem:
        raise SourceError(f"{where}: {problem}")


def _check_separator(source: FileSource) -> None:
    """A CSV read as one column whose name holds another separator: the file is not comma-separated."""
    columns = source.columns()
    stored = [c for c in columns if c != source.cfg.dataset.timestamp_column] or columns
    if len(stored) != 1:
        return
    name = stored[0]
    for sep, word in _SEPARATORS.items():
        if sep in name:
            raise SourceError(
                f"{source.files[0]}: read as one column {name[:60]!r}: the file is {word}-separated; save it "
                "comma-separated (CSV) or as Parquet"
            )


def _check_named_columns(cfg: MlopsConfig, head: pd.DataFrame, where: str) -> None:
    """The columns the config names (label, entity keys, typed feature lists) are in the data."""
    ds = cfg.dataset
    present = [str(c) for c in head.columns]
    for key, names in (
        ("entity_columns", ds.entity_columns),
        ("categorical_columns", ds.categorical_columns or []),
        ("numeric_columns", ds.numeric_columns or []),
        ("unique_key", ds.unique_key or []),
    ):
        missing = [n for n in names if n not in present]
        if missing:
            raise SourceError(
                f"{where}: dataset.{key} names {missing}, not in the data (columns: {present}): correct the "
                "names or remove them"
            )


def _check_same_dataset(cfg: MlopsConfig, home: Path, columns: list[str], where: str) -> None:
    """The model's stored state (partitions, data contract, registry) was built from this dataset, or from an
    earlier version of it. Another dataset under the same ``model.name`` would be judged against the old one's
    data contract; that is a decision for the user, not a gate result."""
    ds = cfg.dataset
    name = cfg.model.name
    state = recorded_state(home, name)
    contract = _stored_contract(home, name)
    if state is None and contract is None:
        return
    before: list[str] = []
    if contract is not None:
        for key in ("label_column", "timestamp_column"):
            old, new = contract.get(key), getattr(ds, key)
            if old is not None and old != new:
                before.append(f"dataset.{key} was {old!r}, now {new!r}")
    if state is not None and not before:
        required = [ds.label_column, ds.timestamp_column, *ds.entity_columns]
        lost = [c for c in required if c not in state.columns]
        moved = state.source is not None and state.source.get("source") != source_identity(cfg)["source"]
        if lost:
            before.append(f"its data had no column {lost[0]!r} (columns: {state.columns[:12]})")
        elif moved and set(state.columns) != set(columns):
            old_source = state.source.get("source") if state.source else "?"
            before.append(f"it was built from {old_source} with columns {state.columns[:12]}")
    if before:
        raise SourceError(
            f"{where}: model.name {name!r} in {home} holds another dataset ({'; '.join(before)}): give this "
            f"dataset its own model.name in {where} (e.g. model.name: {name}_2), or set MLOPS_HOME to a new "
            "folder"
        )


def _stored_contract(home: Path, model_name: str) -> dict[str, Any] | None:
    path = Path(home) / model_name / CONTRACT_FILE
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: cannot read the stored data contract: {err}") from None
    return body if isinstance(body, dict) else None
