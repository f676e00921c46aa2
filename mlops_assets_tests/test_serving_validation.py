"""Request validation without a server: every value is checked against what the engine can represent, before the
request can join a batch (the HTTP behaviour is in test_serving_api.py)."""

from __future__ import annotations

import json
import time

import pytest

from mlops_assets.serving.validation import InputError, InputSchema, Limits, parse_feedback, parse_predict

SCHEMA = InputSchema(timestamp="ts", entities=("station",), numeric=("x",), categorical=("kind",), label="y")


def _refused(doc: dict) -> InputError:
    with pytest.raises(InputError) as info:
        parse_predict(json.dumps(doc).encode(), SCHEMA, Limits())
    return info.value


def _row(**changes) -> dict:
    return {"ts": "2000-01-01T00:00:00", "station": "a", "x": 1.0, "kind": "k", **changes}


@pytest.mark.parametrize(
    "row,field",
    [
        (_row(station="a\x00b"), "rows[0].station"),
        (_row(station=2**63), "rows[0].station"),
        (_row(station=-(2**63) - 1), "rows[0].station"),
        (_row(station=1e300), "rows[0].station"),
        (_row(kind="k\x00"), "rows[0].kind"),
        (_row(x=10**400), "rows[0].x"),
        (_row(ts="2262-04-11T00:00:01"), "rows[0].ts"),
        (_row(ts="1677-09-21T00:00:00"), "rows[0].ts"),
    ],
)
def test_values_beyond_the_engine_are_refused_naming_the_field(row, field):
    err = _refused({"rows": [_row(), row]})
    assert err.status == 422 and err.field == field.replace("[0]", "[1]")


def test_entity_keys_in_entity_requests_are_checked_too():
    err = _refused({"entities": [{"station": "x\x00"}], "as_of": "2000-01-01"})
    assert err.field == "entities[0].station"
    ok = parse_predict(
        json.dumps({"entities": [{"station": 2**63 - 1}], "as_of": "2262-04-10"}).encode(), SCHEMA, Limits()
    )
    assert ok.n == 1


def test_the_earliest_time_leaves_room_for_the_longest_window():
    from datetime import UTC, datetime

    schema = InputSchema(**{**SCHEMA.__dict__, "earliest": datetime(1700, 1, 1, tzinfo=UTC)})
    with pytest.raises(InputError, match="1700-01-01"):
        parse_predict(json.dumps({"rows": [_row(ts="1699-12-31")]}).encode(), schema, Limits())


def test_feedback_duplicate_detection_is_linear():
    ids = [f"id{i}" for i in range(10_000)]
    t0 = time.perf_counter()
    assert parse_feedback(json.dumps({"ids": ids, "labels": [0] * 10_000}).encode(), Limits())[0] == ids
    dup = [*ids[:9_999], "id5000"]
    with pytest.raises(InputError, match="'id5000' appears twice"):
        parse_feedback(json.dumps({"ids": dup, "labels": [0] * 10_000}).encode(), Limits())
    # Quadratic took ~2 s for 10,000 ids on a quiet machine; linear is milliseconds (a wide margin for a loaded one).
    assert time.perf_counter() - t0 < 1.0


def test_feedback_ids_with_nul_are_refused():
    with pytest.raises(InputError) as info:
        parse_feedback(json.dumps({"ids": ["a", "b\x00"], "labels": [0, 1]}).encode(), Limits())
    assert info.value.field == "ids[1]" and info.value.status == 422
