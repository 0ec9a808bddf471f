"""Health through ``environment/status`` (issue 11): ``RemoteExecBackend.status()`` on
ours and on the real codex 0.171.0 exec-server, and PoolBackend's periodic check: a
member that stops answering (its server process SIGSTOPped, as a frozen pod) is
marked unhealthy and gets no new processes; SIGCONT, and it is re-admitted.
"""

from __future__ import annotations

import os
import pathlib
import signal

import pytest
import trio

import unified_exec as ue

from .test_remote_description import KINDS, served


async def _freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it is stopped (delivery to a
    multi-threaded process is not instant: a request sent at once may still be served)."""
    os.kill(pid, signal.SIGSTOP)
    with trio.fail_after(10):
        while True:
            tasks = pathlib.Path(f"/proc/{pid}/task").iterdir()
            states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks]
            if all(s in "Tt" for s in states):
                return
            await trio.sleep(0.01)


def _state(pool: ue.PoolBackend, url: str) -> ue.ServerState:
    return next(s for s in pool.servers if s.url == url)


@pytest.mark.parametrize("kind", KINDS)
async def test_status_answers_and_times_out_when_the_server_is_stopped(
    kind: str, tmp_path: pathlib.Path
) -> None:
    with trio.fail_after(120):
        async with served(kind, tmp_path) as (url, proc), ue.RemoteExecBackend.connect(url) as be:
            st = await be.status()
            assert st.ready and st.status == "ready" and st.latency >= 0
            with pytest.raises(ue.InvalidRequestError):
                await be.status(timeout=-1)
            session = be.session_id
            await _freeze(proc.pid)
            try:
                with pytest.raises(ue.ExecTimeoutError, match="environment/status"):
                    await be.status(timeout=0.5)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            assert (await be.status()).ready  # the same session answers again
            assert be.session_id == session


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stopped_member_is_unhealthy_then_readmitted(
    kind: str, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "o").mkdir()
    with trio.fail_after(180):
        async with (
            served(kind, tmp_path / "v") as (victim, proc),
            served("ours", tmp_path / "o") as (other, _),
            ue.PoolBackend.connect(
                [victim, other], wait_for=2, health_interval=0.3, health_timeout=1.0
            ) as pool,
        ):
            for url in (victim, other):
                state = _state(pool, url)
                assert (state.healthy, state.connected, state.status) == (True, True, "ready")
            await _freeze(proc.pid)
            try:
                with trio.fail_after(15):  # "within a few seconds"
                    while _state(pool, victim).healthy:
                        await trio.sleep(0.1)
                assert _state(pool, victim).last_error
                req = ue.ExecRequest(argv=["cat"], pipe_stdin=True)
                placed = [await pool.start(req) for _ in range(4)]
                assert {pool.server_for(h.process_id) for h in placed} == {other}
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            with trio.fail_after(60):
                while not _state(pool, victim).healthy:
                    await trio.sleep(0.1)
            state = _state(pool, victim)
            assert (state.connected, state.status, state.last_error) == (True, "ready", None)
            back = await pool.start(req)  # the emptier server again
            assert pool.server_for(back.process_id) == victim
            for h in [*placed, back]:
                await h.terminate()
