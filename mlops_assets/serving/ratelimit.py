"""Token buckets per caller, for ``/feedback`` (see :class:`~mlops_assets.serving.validation.Limits`)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable


class LabelBudget:
    """One bucket per key (a token's hash, or a client address): ``burst`` labels, refilled at ``per_second``.

    Used from the event loop only (one thread): no lock. At most ``max_keys`` buckets are kept; the fullest are
    dropped first (a full bucket is what a new one starts as)."""

    def __init__(
        self,
        burst: int,
        per_second: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if burst < 1 or per_second <= 0:
            raise ValueError("a label budget needs burst >= 1 and per_second > 0")
        self.burst, self.per_second, self.max_keys, self.clock = burst, per_second, max_keys, clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (labels left, when)

    @staticmethod
    def key(caller: bytes) -> bytes:
        """What a bucket is kept under: a hash, so no token is held in memory longer than the request."""
        return hashlib.sha256(caller).digest()[:16]

    def take(self, caller: bytes, labels: int) -> float | None:
        """Spend ``labels`` from ``caller``'s bucket: None when it holds them, else the seconds until it will
        (nothing is spent). A request larger than the whole bucket waits for a full one."""
        key = self.key(caller)
        now = self.clock()
        left, when = self._buckets.get(key, (float(self.burst), now))
        left = min(float(self.burst), left + (now - when) * self.per_second)
        need = min(float(labels), float(self.burst))
        if left < need:
            self._buckets[key] = (left, now)
            return (need - left) / self.per_second
        self._buckets[key] = (left - labels if labels <= self.burst else 0.0, now)
        if len(self._buckets) > self.max_keys:
            self._forget_fullest()
        return None

    def _forget_fullest(self) -> None:
        now = self.clock()
        fullness = sorted(
            self._buckets,
            key=lambda k: -(self._buckets[k][0] + (now - self._buckets[k][1]) * self.per_second),
        )
        for k in fullness[: len(self._buckets) - self.max_keys]:
            del self._buckets[k]
