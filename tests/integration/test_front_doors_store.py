"""The session store under random sequences of calls (hypothesis, real processes).

Starting, polling, cancelling a start, pruning (small ``max_sessions``) and
``terminate_all()`` in any order keep three promises: never more than
``max_sessions`` sessions, every session the manager no longer holds has its
process terminated (or finished), and leaving the block leaves no process.
"""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unified_exec as ue
from unified_exec.tools import open_manager

from .helpers import alive

OPS = st.lists(
    st.sampled_from(["start", "start", "quick", "poll", "cancel", "terminate_all"]),
    min_size=1,
    max_size=7,
)


async def _scenario(ops: list[str], max_sessions: int, tmp: pathlib.Path) -> None:
    pids: dict[int, int] = {}  # session id -> pid, for sessions the manager returned
    all_pids: list[int] = []
    backend = ue.LocalPtyBackend(kill_grace=0.2)
    async with open_manager(
        backend, max_sessions=max_sessions, deterministic_ids=True, allow_login_shell=False
    ) as mgr:
        for n, op in enumerate(ops):
            if op in ("start", "quick"):
                cmd = "echo $$; exec sleep 30" if op == "start" else "echo $$"
                out = await mgr.exec_command(cmd, yield_time_ms=250)
                pid = int(out.output.split()[0])
                all_pids.append(pid)
                if out.session_id is not None:
                    pids[out.session_id] = pid
            elif op == "poll" and mgr.session_ids:
                sid = mgr.session_ids[0]
                await mgr.write_stdin(sid, "", yield_time_ms=250, max_output_tokens=0)
            elif op == "cancel":
                pidfile = tmp / f"cancel-{n}"
                with trio.move_on_after(0.5):
                    await mgr.exec_command(
                        f"echo $$ > {pidfile}; exec sleep 30", yield_time_ms=5000
                    )
                if pidfile.exists():
                    all_pids.append(int(pidfile.read_text()))
            elif op == "terminate_all":
                await mgr.terminate_all()
            assert len(mgr.session_ids) <= max_sessions
            # whatever the manager let go of is terminated (terminations run in the
            # background, so give them a moment)
            with trio.fail_after(10):
                while True:
                    dropped = [p for s, p in pids.items() if s not in mgr.session_ids]
                    if not any(alive(p) for p in dropped):
                        break
                    await trio.sleep(0.02)
    with trio.fail_after(10):
        while any(alive(p) for p in all_pids):
            await trio.sleep(0.02)
    await backend.aclose()


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=OPS, max_sessions=st.integers(1, 3))
def test_random_call_sequences_keep_the_store_bounded_and_leak_nothing(
    ops: list[str], max_sessions: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args: Any = (ops, max_sessions, pathlib.Path(tmp))
        trio.run(_scenario, *args)
