"""``unified-exec mcp`` over stdio, driven by the official MCP SDK client (issue 10).

Real child processes throughout: the MCP server is a child speaking on its stdin /
stdout, and its sessions are real processes found in /proc by a marker variable
set in the server's environment (every session inherits it).
"""

from __future__ import annotations

import trio

from unified_exec.tools import tool_specs

from ._mcp_helpers import (
    marked_pids,
    new_marker,
    session_id_of,
    stdio_session,
    text_of,
    wait_no_marked,
)


async def test_lists_codex_tools_with_annotations() -> None:
    with trio.fail_after(60):
        async with stdio_session(new_marker()) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
    specs = {s["name"]: s for s in tool_specs()}
    assert set(tools) == {"exec_command", "write_stdin"}
    for name, spec in specs.items():
        assert tools[name].description == spec["description"]
        assert tools[name].input_schema == spec["parameters"]
        assert tools[name].annotations is not None
        assert tools[name].annotations.destructive_hint is True
        assert tools[name].annotations.open_world_hint is True
        assert tools[name].annotations.read_only_hint is False


async def test_runs_a_command() -> None:
    with trio.fail_after(60):
        async with stdio_session(new_marker()) as session:
            result = await session.call_tool("exec_command", {"cmd": "echo hello-$((6*7))"})
    text = text_of(result)
    assert result.is_error is False
    assert "Process exited with code 0" in text
    assert "hello-42" in text
    assert text.startswith("Chunk ID: ")


async def test_python_tty_session_driven_by_write_stdin() -> None:
    marker = new_marker()
    with trio.fail_after(90):
        async with stdio_session(marker) as session:
            first = await session.call_tool(
                "exec_command", {"cmd": "python3 -i -q", "tty": True, "yield_time_ms": 1500}
            )
            sid = session_id_of(text_of(first))
            answer = await session.call_tool(
                "write_stdin", {"session_id": sid, "chars": "print(6*7, 'x'*3)\n",
                                "yield_time_ms": 2000},
            )  # fmt: skip
            assert "42 xxx" in text_of(answer)
            assert f"session ID {sid}" in text_of(answer)
            bye = await session.call_tool(
                "write_stdin", {"session_id": sid, "chars": "exit()\n", "yield_time_ms": 5000}
            )
            assert "Process exited with code 0" in text_of(bye), text_of(bye)
    assert await wait_no_marked(marker) == []


async def test_slow_command_polled_to_its_end_with_progress() -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with trio.fail_after(90):
        async with stdio_session(new_marker()) as session:
            first = await session.call_tool(
                "exec_command", {"cmd": "echo start; sleep 3; echo finished", "yield_time_ms": 300}
            )
            # 300 ms may end before a login shell on a loaded machine printed "start":
            # it is then in a later poll, never lost.
            sid = session_id_of(text_of(first))
            seen = text_of(first)
            for _ in range(10):
                poll = await session.call_tool(
                    "write_stdin", {"session_id": sid, "yield_time_ms": 10_000},
                    progress_callback=on_progress,
                )  # fmt: skip
                seen += text_of(poll)
                if "Process exited" in text_of(poll):
                    break
    assert "start" in seen and "finished" in seen
    assert seen.index("start") < seen.index("finished")
    assert "Process exited with code 0" in seen
    assert progress, "no progress notification while the poll waited"
    assert progress == sorted(progress)


async def test_calls_are_capped_and_keep_the_session() -> None:
    """--max-wait 5: a 10-minute yield window and a 5-minute empty poll both come
    back (not tight: well under the 60 s MCP clients allow) with the session id."""
    with trio.fail_after(90):
        async with stdio_session(new_marker(), "--max-wait", "5") as session:
            started = trio.current_time()
            first = await session.call_tool(
                "exec_command", {"cmd": "sleep 120", "yield_time_ms": 600_000}
            )
            sid = session_id_of(text_of(first))
            poll = await session.call_tool(
                "write_stdin", {"session_id": sid, "yield_time_ms": 300_000}
            )
            assert session_id_of(text_of(poll)) == sid
            assert trio.current_time() - started < 40


async def test_bad_arguments_are_tool_errors_and_serving_goes_on() -> None:
    with trio.fail_after(60):
        async with stdio_session(new_marker()) as session:
            missing = await session.call_tool("exec_command", {})
            wrong = await session.call_tool("write_stdin", {"session_id": "seven"})
            unknown = await session.call_tool("write_stdin", {"session_id": 999_999, "chars": ""})
            other = await session.call_tool("rm_rf", {})
            typed = await session.call_tool("exec_command", {"cmd": "true", "tty": "yes"})
            fine = await session.call_tool("exec_command", {"cmd": "echo still-here"})
    assert missing.is_error and "missing field `cmd`" in text_of(missing)
    assert wrong.is_error and "session_id must be a number" in text_of(wrong)
    assert unknown.is_error and "Unknown process id 999999" in text_of(unknown)
    assert other.is_error and "unsupported call: rm_rf" in text_of(other)
    assert typed.is_error and "tty must be a boolean" in text_of(typed)
    assert not fine.is_error and "still-here" in text_of(fine)


async def test_closing_stdin_terminates_every_session() -> None:
    marker = new_marker()
    with trio.fail_after(90):
        async with stdio_session(marker) as session:
            for cmd in ("sleep 300", "sleep 301 & sleep 302; wait"):
                result = await session.call_tool("exec_command", {"cmd": cmd, "yield_time_ms": 300})
                session_id_of(text_of(result))
            await session.call_tool(
                "exec_command", {"cmd": "python3 -i -q", "tty": True, "yield_time_ms": 300}
            )
            assert len(marked_pids(marker)) >= 4
        assert await wait_no_marked(marker) == []
