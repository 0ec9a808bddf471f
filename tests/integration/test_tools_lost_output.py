"""The tool layer never drops a reported loss in silence: it becomes a warning.

The backend is a scripted fake on purpose: it skips a seq, which is the one fault (a
server-side eviction seen through a gap) no real backend produces on demand.
"""

from __future__ import annotations

import trio

import unified_exec as ue
from unified_exec.tools import UnifiedExecManager

from .test_foreign_backend import ScriptedBackend


async def test_a_lost_seq_is_a_warning_in_the_tool_text() -> None:
    backend = ScriptedBackend(
        [
            ue.OutputEvent(seq=1, stream="stdout", data=b"first\n"),
            ue.OutputEvent(seq=3, stream="stdout", data=b"third\n"),
            ue.ExitedEvent(seq=4, exit_code=0),
            ue.ClosedEvent(seq=5),
        ]
    )
    with trio.fail_after(20):
        async with UnifiedExecManager(backend, allow_login_shell=False) as mgr:
            out = await mgr.exec_command("whatever", yield_time_ms=2000)
            text = await mgr.handle_tool_call("exec_command", {"cmd": "again"})
    assert out.exit_code == 0
    assert b"first" in out.raw_output and b"third" in out.raw_output
    assert any("lost" in w and "2" in w for w in out.warnings), out.warnings
    assert "Warning: some output was lost before it could be read (seqs 2)" in text
