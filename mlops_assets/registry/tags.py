"""What a registered version says about how it was fitted, read back from its tags without heavy imports (the
``status`` command and the run report use it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# The partitions the deployed model was fitted on ("first..last"; the refit's window when refit is on).
TAG_TRAINED_WINDOW = "mlops.trained_window"
# The decision threshold chosen on the validation window; serving predicts positive at or above it.
TAG_DECISION_THRESHOLD = "mlops.decision_threshold"
# ISO UTC time the version was trained.
TAG_TRAINED_AT = "mlops.trained_at"

_KEY_FORMATS = ("%Y-%m-%d", "%Y-%m", "%Y")


def champion_fit(tags: dict[str, str], now: datetime | None = None) -> dict[str, Any]:
    """The window a version was fitted on (``trained_window``; None for a version that predates the tag), its
    decision threshold, and how old it is: ``age_days`` since it was trained, ``data_age_days`` since the start of
    the newest partition it was fitted on."""
    now = now or datetime.now(UTC)
    window = tags.get(TAG_TRAINED_WINDOW)
    start, _, end = window.partition("..") if window else (None, None, None)
    threshold = tags.get(TAG_DECISION_THRESHOLD)
    trained_at = tags.get(TAG_TRAINED_AT)
    age = (now - datetime.fromisoformat(trained_at)).total_seconds() / 86400 if trained_at else None
    data_age = None
    for fmt in _KEY_FORMATS:
        if not end:
            break
        try:
            newest = datetime.strptime(end, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        data_age = (now - newest).total_seconds() / 86400
        break
    return {
        "trained_window": {"start": start, "end": end} if window else None,
        "threshold": float(threshold) if threshold else None,
        "trained_at": trained_at,
        "age_days": None if age is None else round(age, 2),
        "data_age_days": None if data_age is None else round(data_age, 2),
    }
