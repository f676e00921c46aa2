"""Request validation: every bad input becomes an :class:`InputError` naming the field, before anything is queued.

Validation is plain Python on the decoded JSON (no pandas per request: a frame is built once per batch), so a
single-row request costs microseconds here. Accepted values:

- the timestamp column and ``as_of``: ISO 8601 strings (naive ones are taken as UTC) inside the range the feature
  engine represents (pandas' ``datetime64[ns]``: 1677-09-21 to 2262-04-11, less the longest window before the
  event), so that no value can overflow inside a batch it shares with other requests;
- entity keys: strings without NUL characters, or integers that fit in 64 bits;
- numeric model inputs: JSON numbers (``null`` = missing, which the model handles); ``NaN``/``Infinity`` and
  numbers too large for a double are refused;
- categorical model inputs: strings without NUL characters (or ``null``);
- the JSON itself: nesting deeper than the interpreter's recursion limit and integers of more than 4,300 digits
  are refused as invalid JSON (400).
- ``dataset.drop_columns`` and window-feature source columns that are not model inputs may be present (a raw
  event carries them) and are ignored; the label is refused (labels go to ``/feedback``); anything else is an
  unknown column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class RequestError(Exception):
    """A request answered with an error status; ``field`` names where (e.g. ``rows[3].temperature``)."""

    def __init__(self, field: str, message: str, status: int):
        self.field = field
        self.message = message
        self.status = status
        super().__init__(f"{field}: {message}")

    def to_dict(self) -> dict[str, str]:
        return {"error": str(self), "field": self.field}


class InputError(RequestError, ValueError):
    """A request the service refuses as given (4xx)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(field, message, status)


# The feature engine computes in datetime64[ns]: times outside pandas' range wrap around or overflow.
EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
LATEST = datetime(2262, 4, 11, tzinfo=UTC)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """Request limits (the defaults suit single events and small batches)."""

    max_rows: int = 1000
    max_body_bytes: int = 1 << 20
    body_seconds: float = 10.0  # from the end of the headers to the end of the body (408 after)
    # Labels /feedback takes per token (without authentication: per client address): a bucket of this many labels,
    # refilled at the rate below; a request that would overdraw it gets 429 and Retry-After. Sized for a labeling
    # job (100,000 at once, 1,000 a second after), not for a flood that rewrites the live metric.
    feedback_burst_labels: int = 100_000
    feedback_labels_per_second: float = 1_000.0


@dataclass(frozen=True)
class InputSchema:
    """What a raw event row must hold for one served model."""

    timestamp: str
    entities: tuple[str, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    label: str
    ignored: frozenset[str] = field(default_factory=frozenset)
    # Event times the engine can compute with: a window reaches back from the event (see build_served_model).
    earliest: datetime = EARLIEST
    latest: datetime = LATEST

    @property
    def required(self) -> tuple[str, ...]:
        return (self.timestamp, *self.entities, *self.numeric, *self.categorical)

    @property
    def columns(self) -> list[str]:
        return list(self.required)


@dataclass
class RowsRequest:
    """Validated rows, column-wise (values already coerced), with each row's event time."""

    columns: dict[str, list[Any]]
    event_times: list[datetime]

    @property
    def n(self) -> int:
        return len(self.event_times)


@dataclass
class EntitiesRequest:
    """Validated entity keys and the time their features are read as of."""

    entities: list[dict[str, Any]]
    as_of: datetime

    @property
    def n(self) -> int:
        return len(self.entities)


def _nonfinite(text: str) -> float:
    # json accepts NaN/Infinity literals; keep them as non-finite floats so the check below names the field.
    return float(text.replace("Infinity", "inf"))


def decode_json(body: bytes) -> Any:
    if not body:
        raise InputError("body", "empty request body; expected a JSON object", 400)
    try:
        return json.loads(body, parse_constant=_nonfinite)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        # ValueError includes integers of more than 4,300 digits (Python's int-parsing limit); RecursionError is
        # nesting deeper than the interpreter's recursion limit (~1,000 levels), met in microseconds.
        raise InputError("body", f"not valid JSON ({err})", 400) from None


def parse_time(value: Any, where: str, earliest: datetime = EARLIEST, latest: datetime = LATEST) -> datetime:
    if not isinstance(value, str):
        raise InputError(where, f"expected an ISO 8601 time string, got {_kind(value)}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(where, f"{value!r} is not an ISO 8601 time") from None
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    if not earliest <= dt < latest:
        raise InputError(
            where,
            f"{value!r} is outside the times the service can compute features for "
            f"({earliest:%Y-%m-%d} to {latest:%Y-%m-%d})",
        )
    return dt


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _entity_value(v: Any, where: str) -> str | int:
    if isinstance(v, str):
        if "\x00" in v:
            raise InputError(where, "entity key contains a NUL character")
        return v
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and math.isfinite(v) and v == int(v):
            v = int(v)
        else:
            raise InputError(where, f"expected a string or integer entity key, got {_kind(v)}")
    if not INT64_MIN <= v <= INT64_MAX:
        raise InputError(where, "integer entity key does not fit in 64 bits")
    return v


def _number(v: Any, where: str) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InputError(where, f"expected a number, got {_kind(v)}")
    try:
        f = float(v)
    except OverflowError:  # an integer literal beyond a double's range
        raise InputError(where, "number too large for a double") from None
    if not math.isfinite(f):
        raise InputError(where, f"expected a finite number, got {v!r}")
    return f


def _category(v: Any, where: str) -> str | None:
    if v is None:
        return v
    if isinstance(v, str):
        if "\x00" in v:
            raise InputError(where, "contains a NUL character")
        return v
    raise InputError(where, f"expected a string, got {_kind(v)}")


def parse_predict(body: bytes, schema: InputSchema, limits: Limits) -> RowsRequest | EntitiesRequest:
    """Decode and validate a ``/predict`` body; raises :class:`InputError` naming the field."""
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise InputError("body", f"expected a JSON object, got {_kind(doc)}", 400)
    has_rows, has_entities = "rows" in doc, "entities" in doc
    if has_rows == has_entities:
        raise InputError("body", "give exactly one of 'rows' or 'entities' (with 'as_of')")
    allowed = {"rows"} if has_rows else {"entities", "as_of"}
    extra = sorted(set(doc) - allowed)
    if extra:
        raise InputError(extra[0], f"unknown field (expected {sorted(allowed)})")
    return _parse_rows(doc["rows"], schema, limits) if has_rows else _parse_entities(doc, schema, limits)


def _check_list(items: Any, name: str, limits: Limits) -> list:
    if not isinstance(items, list):
        raise InputError(name, f"expected a list, got {_kind(items)}")
    if not items:
        raise InputError(name, "is empty")
    if len(items) > limits.max_rows:
        raise InputError(name, f"{len(items)} items; at most {limits.max_rows} per request", 413)
    return items


def _parse_rows(rows: Any, schema: InputSchema, limits: Limits) -> RowsRequest:
    _check_list(rows, "rows", limits)
    required = set(schema.required)
    cols: dict[str, list[Any]] = {c: [] for c in schema.required}
    times: list[datetime] = []
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if not isinstance(row, dict):
            raise InputError(where, f"expected an object of column values, got {_kind(row)}")
        if row.keys() - required:
            for k in row:
                if k in required or k in schema.ignored:
                    continue
                if k == schema.label:
                    raise InputError(f"{where}.{k}", "is the label column; send labels to /feedback")
                raise InputError(f"{where}.{k}", "unknown column")
        missing = [c for c in schema.required if c not in row]
        if missing:
            raise InputError(f"{where}.{missing[0]}", "missing column")
        ts = parse_time(row[schema.timestamp], f"{where}.{schema.timestamp}", schema.earliest, schema.latest)
        times.append(ts)
        cols[schema.timestamp].append(ts)
        for c in schema.entities:
            cols[c].append(_entity_value(row[c], f"{where}.{c}"))
        for c in schema.numeric:
            cols[c].append(_number(row[c], f"{where}.{c}"))
        for c in schema.categorical:
            cols[c].append(_category(row[c], f"{where}.{c}"))
    return RowsRequest(cols, times)


def _parse_entities(doc: dict, schema: InputSchema, limits: Limits) -> EntitiesRequest:
    entities = _check_list(doc["entities"], "entities", limits)
    if "as_of" not in doc:
        raise InputError("as_of", "missing: entity requests read features as of this time")
    as_of = parse_time(doc["as_of"], "as_of", schema.earliest, schema.latest)
    out = []
    for i, ent in enumerate(entities):
        where = f"entities[{i}]"
        if not isinstance(ent, dict):
            raise InputError(where, f"expected an object of entity keys, got {_kind(ent)}")
        for k in ent:
            if k not in schema.entities:
                raise InputError(
                    f"{where}.{k}", f"not an entity column (entity columns: {list(schema.entities)})"
                )
        missing = [c for c in schema.entities if c not in ent]
        if missing:
            raise InputError(f"{where}.{missing[0]}", "missing entity column")
        out.append({c: _entity_value(ent[c], f"{where}.{c}") for c in schema.entities})
    return EntitiesRequest(out, as_of)


def parse_feedback(body: bytes, limits: Limits) -> tuple[list[str], list[int]]:
    """Decode and validate a ``/feedback`` body: ``{"ids": [...], "labels": [...]}`` of equal length; labels are
    0/1 (or booleans) in the model's terms: 1 = the positive class."""
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise InputError("body", f"expected a JSON object, got {_kind(doc)}", 400)
    for k in doc:
        if k not in ("ids", "labels"):
            raise InputError(k, "unknown field (expected 'ids' and 'labels')")
    for k in ("ids", "labels"):
        if k not in doc:
            raise InputError(k, "missing field")
    ids = _check_list(doc["ids"], "ids", Limits(max_rows=limits.max_rows * 10))
    labels = doc["labels"]
    if not isinstance(labels, list):
        raise InputError("labels", f"expected a list, got {_kind(labels)}")
    if len(labels) != len(ids):
        raise InputError("labels", f"{len(labels)} labels for {len(ids)} ids")
    for i, v in enumerate(ids):
        if not isinstance(v, str) or not v:
            raise InputError(f"ids[{i}]", f"expected a prediction id string, got {_kind(v)}")
        if "\x00" in v:  # PostgreSQL refuses NUL in text: it would read as the database being away
            raise InputError(f"ids[{i}]", "contains a NUL character")
    seen: set[str] = set()
    for v in ids:  # linear: a list scan per id stalled the event loop for seconds on 10,000 ids
        if v in seen:
            raise InputError("ids", f"id {v!r} appears twice")
        seen.add(v)
    out = []
    for i, v in enumerate(labels):
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, int) or v not in (0, 1):
            raise InputError(f"labels[{i}]", f"expected 0 or 1 (1 = the positive class), got {v!r}")
        out.append(v)
    return ids, out
