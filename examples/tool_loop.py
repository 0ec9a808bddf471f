"""A minimal agent loop: a (scripted, offline) model calls exec_command / write_stdin.

The model is fake — it replays a fixed script — but everything else is what a real
framework does: hand the model ``tool_specs()``, run each tool call it makes with
``handle_tool_call()``, and feed the text back as the tool result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import trio

import unified_exec as ue
from unified_exec.tools import UnifiedExecManager


class ScriptedModel:
    """Stands in for an LLM: each turn it reads the last tool result and answers."""

    def __init__(self) -> None:
        self._steps = self._script()
        next(self._steps)

    def _script(self) -> Iterator[dict[str, Any]]:
        result = yield {}
        result = yield self._call("exec_command", cmd="python3 -q -i", tty=True, yield_time_ms=1500)
        session = int(re.search(r"session ID (\d+)", result).group(1))  # type: ignore[union-attr]
        result = yield self._call("write_stdin", session_id=session, chars="6 * 7\n")
        result = yield self._call("write_stdin", session_id=session, chars="exit()\n")
        result = yield self._call("exec_command", cmd="echo done; exit 3")
        yield {
            "type": "message",
            "content": "All done: the REPL said 42, the last command exited 3.",
        }

    @staticmethod
    def _call(name: str, **arguments: Any) -> dict[str, Any]:
        return {"type": "function_call", "name": name, "arguments": json.dumps(arguments)}

    def respond(self, tools: list[dict[str, Any]], last_result: str) -> dict[str, Any]:
        assert {t["name"] for t in tools} == {"exec_command", "write_stdin"}
        return self._steps.send(last_result)


async def main() -> None:
    async with UnifiedExecManager(
        ue.LocalPtyBackend(), deterministic_ids=True, allow_login_shell=False
    ) as mgr:
        model = ScriptedModel()
        result = ""
        while True:
            reply = model.respond(mgr.tool_specs(), result)
            if reply["type"] == "message":
                print(f"model: {reply['content']}")
                break
            print(f"model -> {reply['name']}({reply['arguments']})")
            result = await mgr.handle_tool_call(reply["name"], reply["arguments"])
            print("\n".join(f"    {line}" for line in result.splitlines()))


if __name__ == "__main__":
    trio.run(main)
