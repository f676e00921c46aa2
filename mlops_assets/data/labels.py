"""The configured positive label beside the labels the data holds: one rule for the pre-run check and the data
contract, with a message that says how to write the label."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

# What YAML 1.1 reads as true / false when unquoted.
_YAML_TRUE = {"true", "yes", "on", "y"}
_YAML_FALSE = {"false", "no", "off", "n"}


def positive_label_problem(positive: Any, labels: Iterable[Any]) -> str | None:
    """Why ``dataset.positive_label`` cannot be one of ``labels`` (the distinct values seen), or None when it is
    or may still be (fewer than two classes seen). The message says how to write it: as the data spells it,
    quoted when YAML would read it as a boolean."""
    seen = sorted({_plain(v) for v in labels}, key=str)
    if len(seen) > 2:
        return (
            f"the label column holds more than two classes ({seen[:10]}): binary classification needs two; map "
            "them to two before ingesting"
        )
    if len(seen) < 2 or is_label(positive, seen):
        return None
    if isinstance(positive, bool):
        words = _YAML_TRUE if positive else _YAML_FALSE
        spelled = [v for v in seen if isinstance(v, str) and v.lower() in words]
        if spelled:
            return (
                f"dataset.positive_label was read as the boolean {positive} (YAML reads unquoted "
                f"yes/no/on/off/true/false as booleans); the labels are {seen}: quote it, "
                f"positive_label: {json.dumps(spelled[0])}"
            )
    near = [v for v in seen if str(v).strip().lower() == str(positive).strip().lower()]
    hint = (
        f"write it as the data spells it, positive_label: {json.dumps(near[0])}"
        if near
        else ("set it to one of them (quoted if it is text)")
    )
    return f"dataset.positive_label {positive!r} is not one of the labels {seen}: {hint}"


def is_label(positive: Any, labels: Iterable[Any]) -> bool:
    """Whether ``positive`` is one of ``labels``, compared as given or as text (a YAML ``1`` and a label ``"1"``)."""
    return any(v == positive or str(v) == str(positive) for v in (_plain(v) for v in labels))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
