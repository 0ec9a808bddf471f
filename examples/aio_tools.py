"""The agent tools from asyncio: concurrent calls, and a call cancelled by a timeout.

``unified_exec.aio.Manager`` runs the tool layer on trio as a guest of this
asyncio loop: no thread per call, and cancelling the awaiting task (here,
``asyncio.wait_for``) cancels the call and terminates the session it started.
"""

from __future__ import annotations

import asyncio
import time

from unified_exec import aio


async def main() -> None:
    async with aio.Manager(allow_login_shell=False) as mgr:
        t0 = time.monotonic()
        outs = await asyncio.gather(
            *(mgr.exec_command(f"sleep 1; echo job {i}", yield_time_ms=5000) for i in range(5))
        )
        print(f"5 commands of 1 s side by side took {time.monotonic() - t0:.1f} s:")
        for out in outs:
            print(f"    {out.output.strip()} (exit {out.exit_code})")

        try:
            await asyncio.wait_for(mgr.exec_command("sleep 60", yield_time_ms=30_000), 0.5)
        except TimeoutError:
            print(f"a call cancelled by its timeout leaves sessions: {mgr.session_ids}")

        text = await mgr.handle_tool_call("exec_command", '{"cmd": "echo from a model"}')
        print("a model's tool call answers:")
        print("\n".join(f"    {line}" for line in text.splitlines()))


if __name__ == "__main__":
    asyncio.run(main())
