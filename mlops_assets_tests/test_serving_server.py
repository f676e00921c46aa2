"""The transport wrapper of ``mlops-assets serve``: a response's head and body leave in one write, in order."""

from __future__ import annotations

import asyncio

from mlops_assets.serving.server import _OneWriteTransport


class _Recorder:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_head_and_body_in_one_write_and_nothing_held_or_reordered():
    async def run() -> _Recorder:
        raw = _Recorder()
        t = _OneWriteTransport(raw)  # type: ignore[arg-type]
        t.write(HEAD)
        t.write(b"{}")
        assert raw.writes == [HEAD + b"{}"]
        # A head without a body in the same step still leaves, on the next loop step.
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert len(raw.writes) == 1
        await asyncio.sleep(0)
        assert raw.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
        # Other bytes pass straight through; close sends what is held first; other attributes are forwarded.
        t.write(b"5\r\nhello\r\n")
        t.write(HEAD)
        assert not t.is_closing()
        t.close()
        assert raw.writes[-2:] == [b"5\r\nhello\r\n", HEAD] and raw.closed
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        return raw

    assert len(asyncio.run(run()).writes) == 4


def test_batcher_gathers_returning_clients_into_one_batch():
    """Closed-loop clients are answered together and come back together: one batch per round, formed as soon as
    they are all back (not at the end of max_wait); a lone client never waits for others."""
    import time

    from mlops_assets.serving.batcher import MicroBatcher

    sizes: list[int] = []

    def process(jobs):
        sizes.append(len(jobs))
        time.sleep(0.005)  # a model call, blocking the loop like the inline batches do
        return [j.payload for j in jobs]

    async def client(b: MicroBatcher, i: int, rounds: int) -> None:
        for r in range(rounds):
            assert await b.submit((i, r), 1) == (i, r)
            await asyncio.sleep(0.0005)  # the client's own time between answer and next request

    async def run(clients: int, rounds: int) -> float:
        b = MicroBatcher(process, max_wait=0.05, inline=True)
        await b.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(b, i, rounds) for i in range(clients)))
        elapsed = time.perf_counter() - t0
        await b.stop()
        return elapsed

    elapsed = asyncio.run(run(10, 20))
    assert sizes[1:] == [10] * 19, sizes  # the first batch is whoever came first
    assert elapsed < 20 * 0.005 + 0.05 + 19 * 0.02  # far from 19 waits of max_wait
    sizes.clear()
    elapsed = asyncio.run(run(1, 20))
    # Waiting out max_wait even on half of the 20 requests would take 0.5 s; each call itself takes 5 ms.
    assert sizes == [1] * 20 and elapsed < 10 * 0.05, elapsed
