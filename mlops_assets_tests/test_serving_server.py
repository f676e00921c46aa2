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
