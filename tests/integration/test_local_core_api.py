"""Issue 9 in the local core: the cursor a read hands back, declared capabilities."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

import unified_exec as ue
from unified_exec.backends import Capability, capabilities_of

from .helpers import sh


async def test_read_hands_back_the_cursor_to_pass_next() -> None:
    backend = ue.LocalPtyBackend()
    req = sh("for i in 1 2 3 4 5; do echo line $i; sleep 0.02; done")
    async with backend, ue.open_process(backend, req) as proc:
        got = b""
        cursor = 0
        with trio.fail_after(20):
            while True:
                res = await proc.read(after_seq=cursor, wait=5)
                assert res.cursor == res.next_seq - 1
                got += b"".join(c.data for c in res.chunks)
                cursor = res.cursor
                if res.closed:
                    break
        assert got == b"".join(b"line %d\n" % i for i in range(1, 6))
        # The cursor of a closed process is answered at once, with the end.
        with trio.fail_after(10):
            assert (await proc.read(after_seq=cursor, wait=30)).closed


async def test_a_local_handle_declares_close_stdin() -> None:
    async with ue.LocalPtyBackend() as backend:
        handle = await backend.start(ue.ExecRequest(["true"]))
        assert capabilities_of(handle) == {
            Capability.CLOSE_STDIN,
            Capability.RESIZE,
            Capability.INTERRUPT,
        }
        await handle.terminate()


class _Handle:
    """Fake: the smallest third-party handle, to see how its capabilities are read."""

    process_id = "fake"

    async def _events(self) -> AsyncIterator[ue.ProcessEvent]:
        yield ue.ExitedEvent(seq=1, exit_code=0)
        yield ue.ClosedEvent(seq=2)

    def events(self) -> AsyncIterator[ue.ProcessEvent]:
        return self._events()

    async def write(self, data: bytes) -> ue.WriteStatus:
        return ue.WriteStatus.STDIN_CLOSED

    async def terminate(self) -> None:
        pass

    async def interrupt(self) -> None:
        pass

    async def resize(self, rows: int, cols: int) -> None:
        pass

    async def close_stdin(self) -> None:
        self.eof = True


class _Declared(_Handle):
    capabilities: frozenset[Capability] = frozenset()  # has the method, declines it


async def test_an_undeclared_handle_is_read_from_its_methods_a_declared_one_as_declared() -> None:
    assert capabilities_of(_Handle()) == {Capability.CLOSE_STDIN}
    assert capabilities_of(_Declared()) == frozenset()
    proc = ue.UnifiedExecProcess.from_handle(_Declared())
    with pytest.raises(ue.InvalidRequestError):
        await proc.close_stdin()
    await proc.wait()
