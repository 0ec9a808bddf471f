"""Volume through the real codex server: a reader that keeps up loses nothing.

codex sends 8 KiB notifications, so a client that reads frames in bursts can run
ahead of a reader taking one event at a time; the client must not turn that into
loss (its per-process buffer cap is for readers that stop, not for this).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio

import unified_exec as ue

MiB = 1 << 20


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "pty"])
async def test_64mib_from_codex_arrive_complete(
    codex_stdio: Callable[[], AbstractAsyncContextManager[Any]], tty: bool
) -> None:
    size = 64 * MiB if not tty else 16 * MiB
    total = 0
    with trio.fail_after(180):
        async with codex_stdio() as backend:
            req = ue.ExecRequest(["head", "-c", str(size), "/dev/zero"], tty=tty)
            async with ue.open_process(backend, req) as proc:
                async for event in proc.events():
                    assert not isinstance(event, ue.LostEvent | ue.FailedEvent), event
                    if isinstance(event, ue.OutputEvent):
                        total += len(event.data)
    assert total == size
