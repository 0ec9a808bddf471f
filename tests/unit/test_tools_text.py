"""The pure parts of the agent tool layer, against agent-tools-codex.md.

§4 scenarios: 1 (derived argv only), 11, 12, 41-43, 46-52; plus the §1.3 text of
``ExecCommandOutput.to_text()``, the §2.7 truncation arithmetic and the §1.1/§1.2
tool specs. Scenario 53 (UTF-8 delta splitting) is not here: the library has no
output-delta splitter (it emits no streaming delta events).
"""

from __future__ import annotations

import json
import re

import pytest
import trio

import unified_exec as ue
from unified_exec.tools import (
    UNIFIED_EXEC_ENV,
    ExecCommandOutput,
    HeadTailBuffer,
    UnifiedExecManager,
    apply_unified_exec_env,
    clamp_yield_time,
    formatted_truncate_text,
    session_to_prune,
    tool_specs,
    truncate_middle_with_token_budget,
)
from unified_exec.tools._text import approx_token_count, omission_marker, rust_line_count

# -- A. tool surface -------------------------------------------------------------------


def test_s01_default_shell_argv() -> None:
    mgr = UnifiedExecManager(ue.LocalPtyBackend())  # login shells allowed (the default)
    cmd = "/bin/echo hello unified exec"
    argv = mgr.command_argv(cmd, shell="/bin/bash")
    assert argv == ["/bin/bash", "-lc", cmd]
    assert mgr.command_argv(cmd, shell="/bin/bash", login=False) == ["/bin/bash", "-c", cmd]
    assert mgr.command_argv(cmd, shell="/bin/bash", login=True) == ["/bin/bash", "-lc", cmd]


def test_default_shell_and_disabled_login() -> None:
    mgr = UnifiedExecManager(ue.LocalPtyBackend(), default_shell="/bin/sh", allow_login_shell=False)
    assert mgr.command_argv("true") == ["/bin/sh", "-c", "true"]
    assert mgr.command_argv("true", shell="/bin/zsh") == ["/bin/zsh", "-c", "true"]
    with pytest.raises(ue.InvalidRequestError) as info:
        mgr.command_argv("true", login=True)
    assert str(info.value) == (
        "login shell is disabled by config; omit `login` or set it to false."
    )


async def test_disabled_login_error_text_via_handle_tool_call() -> None:
    with trio.fail_after(10):
        async with UnifiedExecManager(ue.LocalPtyBackend(), allow_login_shell=False) as mgr:
            text = await mgr.handle_tool_call("exec_command", {"cmd": "true", "login": True})
            assert mgr.session_ids == []
    assert text == (
        "exec_command failed for `true`: "
        "login shell is disabled by config; omit `login` or set it to false."
    )


@pytest.mark.parametrize(
    ("given", "clamped"), [(1000, 1000), (1, 250), (30001, 30000), (250, 250), (0, 250)]
)
def test_s11_yield_clamp(given: int, clamped: int) -> None:
    assert clamp_yield_time(given) == clamped


def test_s12_env_defaults() -> None:
    assert apply_unified_exec_env({}) == {
        "NO_COLOR": "1",
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "LC_CTYPE": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "COLORTERM": "",
        "PAGER": "cat",
        "GIT_PAGER": "cat",
        "GH_PAGER": "cat",
        "CODEX_CI": "1",
    }
    assert len(UNIFIED_EXEC_ENV) == 10
    base = {"NO_COLOR": "0", "PATH": "/usr/bin"}
    env = apply_unified_exec_env(base)
    assert env["NO_COLOR"] == "1"
    assert env["PATH"] == "/usr/bin"
    assert env == {**UNIFIED_EXEC_ENV, "PATH": "/usr/bin"}
    assert base == {"NO_COLOR": "0", "PATH": "/usr/bin"}  # not modified in place


# -- D. pruning policy -----------------------------------------------------------------


def _meta(exited: set[int]) -> list[tuple[int, float, bool]]:
    # ids 1-10, last used 40, 37, ..., 13 s ago
    return [(i, -40.0 + 3 * (i - 1), i in exited) for i in range(1, 11)]


def test_s41_prune_prefers_exited_outside_recent8() -> None:
    assert session_to_prune(_meta({2})) == 2


def test_s42_prune_lru_when_none_exited() -> None:
    assert session_to_prune(_meta(set())) == 1


def test_s43_prune_protects_recent_exited() -> None:
    assert session_to_prune(_meta({3, 10})) == 1


def test_prune_needs_more_than_eight() -> None:
    assert session_to_prune(_meta(set())[:8]) is None
    assert session_to_prune([]) is None
    # Order of the input does not matter, only last_used.
    assert session_to_prune(list(reversed(_meta({2})))) == 2


# -- E. head/tail buffer ------------------------------------------------------------------


def test_s46_overflow_keeps_head_and_tail() -> None:
    buf = HeadTailBuffer(10)
    buf.push(b"0123456789")
    buf.push(b"ab")
    assert buf.omitted == 2
    assert buf.to_bytes() == b"01234789ab"
    assert buf.to_bytes_with_omission_marker() == b"01234\n... 2 bytes omitted ...\n789ab"


def test_s47_zero_capacity_drops_everything() -> None:
    buf = HeadTailBuffer(0)
    buf.push(b"abc")
    assert buf.retained == 0
    assert buf.omitted == 3
    assert buf.snapshot() == []
    assert buf.to_bytes() == b""


def test_s48_capacity_one_keeps_the_last_byte() -> None:
    buf = HeadTailBuffer(1)
    buf.push(b"abc")
    assert buf.to_bytes() == b"c"
    assert buf.omitted == 2


def test_s49_big_chunk_replaces_the_tail() -> None:
    buf = HeadTailBuffer(10)
    buf.push(b"0123456789")
    buf.push(b"ABCDEFGHIJK")
    data = buf.to_bytes()
    assert data.startswith(b"01234") and data.endswith(b"GHIJK")
    assert data == b"01234GHIJK"
    assert buf.omitted == 11


def test_s50_small_chunks_fill_then_trim() -> None:
    buf = HeadTailBuffer(10)
    for chunk in (b"01", b"234", b"567", b"89"):
        buf.push(chunk)
    assert buf.to_bytes() == b"0123456789"
    assert buf.omitted == 0
    assert buf.to_bytes_with_omission_marker() == b"0123456789"  # no marker when none omitted
    buf.push(b"a")
    assert buf.to_bytes() == b"012346789a"
    assert buf.omitted == 1


def test_s51_empty_chunks_and_drain() -> None:
    buf = HeadTailBuffer(10)
    for byte in b"0123456789ab":
        buf.push(b"")
        buf.push(bytes([byte]))
    buf.push(b"")
    assert buf.snapshot() == [b"01234", b"789ab"]
    assert buf.retained == 10
    assert buf.omitted == 2
    assert buf.drain() == (b"01234", 2, b"789ab")
    assert buf.retained == 0
    assert buf.omitted == 0
    assert buf.snapshot() == []


def test_head_tail_defaults_and_marker() -> None:
    buf = HeadTailBuffer()
    assert buf.max_bytes == 1024 * 1024
    assert (buf.head_budget, buf.tail_budget) == (512 * 1024, 512 * 1024)
    odd = HeadTailBuffer(11)
    assert (odd.head_budget, odd.tail_budget) == (5, 6)
    assert omission_marker(42) == b"\n... 42 bytes omitted ...\n"
    with pytest.raises(ValueError):
        HeadTailBuffer(-1)


# -- E. truncation ----------------------------------------------------------------------


def test_s52_zero_budget_gives_the_marker_only() -> None:
    assert truncate_middle_with_token_budget("abcdef", 0) == "\u20262 tokens truncated\u2026"


def test_s52_multibyte_text_cut_on_char_boundaries() -> None:
    text = "\U0001f600" * 10 + "\nsecond line with text\n"
    assert approx_token_count(len(text.encode())) == 16
    assert truncate_middle_with_token_budget(text, 8) == (
        "\U0001f600" * 4 + "\u20268 tokens truncated\u2026 line with text\n"
    )
    assert formatted_truncate_text(text, 8) == (
        "Total output lines: 2\n\n"
        + "\U0001f600" * 4
        + "\u20268 tokens truncated\u2026 line with text\n"
    )


def test_truncation_boundaries_round_inwards() -> None:
    # Prefix: whole chars ending at or before the left budget; suffix: from the first
    # char boundary at or after len - right.
    assert truncate_middle_with_token_budget("a\u00e9\u00e9\u00e9\u00e9", 1) == (
        "a\u20262 tokens truncated\u2026\u00e9"
    )
    assert truncate_middle_with_token_budget("\u00e9" * 10, 2) == (
        "\u00e9\u00e9\u20263 tokens truncated\u2026\u00e9\u00e9"
    )


def test_truncation_leaves_text_that_fits() -> None:
    assert formatted_truncate_text("abcd", 1) == "abcd"  # exactly tokens*4 bytes
    assert truncate_middle_with_token_budget("abcd", 1) == "abcd"
    assert formatted_truncate_text("", 0) == ""
    assert formatted_truncate_text("abcde", 1) == (
        "Total output lines: 1\n\nab\u20261 tokens truncated\u2026de"
    )


def test_truncation_worked_example_999_lines() -> None:
    text = "".join(f"EXEC-LINE-{i:04d} {'x' * 20}\n" for i in range(1, 1000))
    assert len(text) == 35964
    assert approx_token_count(len(text)) == 8991
    out = formatted_truncate_text(text, 50)
    head, tail = text[:100], text[-100:]
    assert out == f"Total output lines: 999\n\n{head}\u20268941 tokens truncated\u2026{tail}"


@pytest.mark.parametrize(
    ("text", "count"),
    [("", 0), ("a", 1), ("a\n", 1), ("a\nb", 2), ("\n\n", 2), ("a\r\nb\r\n", 2), ("\n", 1)],
)
def test_rust_line_count(text: str, count: int) -> None:
    assert rust_line_count(text) == count


@pytest.mark.parametrize(("nbytes", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (35964, 8991)])
def test_approx_token_count(nbytes: int, tokens: int) -> None:
    assert approx_token_count(nbytes) == tokens


# -- §1.3 output text -------------------------------------------------------------------


def _output(**kw: object) -> ExecCommandOutput:
    fields: dict[str, object] = {
        "chunk_id": "1a2b3c",
        "wall_time": 0.25,
        "exit_code": None,
        "session_id": None,
        "original_token_count": 0,
        "output": "",
        "raw_output": b"",
    }
    fields.update(kw)
    return ExecCommandOutput(**fields)  # type: ignore[arg-type]


def test_to_text_exited() -> None:
    out = _output(exit_code=0, original_token_count=1, output="hi\n", raw_output=b"hi\n")
    assert out.to_text() == (
        "Chunk ID: 1a2b3c\n"
        "Wall time: 0.2500 seconds\n"
        "Process exited with code 0\n"
        "Original token count: 1\n"
        "Output:\n"
        "hi\n"
    )


def test_to_text_running() -> None:
    out = _output(session_id=1000, wall_time=10.00004, output="partial")
    assert out.to_text() == (
        "Chunk ID: 1a2b3c\n"
        "Wall time: 10.0000 seconds\n"
        "Process running with session ID 1000\n"
        "Original token count: 0\n"
        "Output:\n"
        "partial"
    )


def test_to_text_without_chunk_id_and_negative_exit() -> None:
    out = _output(chunk_id="", exit_code=-1, wall_time=1.23456, original_token_count=7)
    assert out.to_text() == (
        "Wall time: 1.2346 seconds\nProcess exited with code -1\nOriginal token count: 7\nOutput:\n"
    )


def test_to_text_matches_the_upstream_regex() -> None:
    upstream = re.compile(
        r"^(?:Total output lines: \d+\n\n)?(?:Chunk ID: [0-9a-f]{6}\n)?"
        r"Wall time: \d+\.\d{4} seconds\n"
        r"(?:Process exited with code -?\d+\n)?(?:Process running with session ID \d+\n)?"
        r"Original token count: \d+\nOutput:\n",
        re.DOTALL,
    )
    for out in (_output(exit_code=3), _output(session_id=4242), _output(chunk_id="")):
        assert upstream.match(out.to_text()), out.to_text()
    defaults = _output()
    assert defaults.omitted_bytes == 0 and defaults.ended_by == "deadline"
    assert defaults.warnings == ()


# -- §1.1 / §1.2 tool specs ---------------------------------------------------------------


def test_tool_specs_shape() -> None:
    specs = tool_specs()
    assert [s["name"] for s in specs] == ["exec_command", "write_stdin"]
    exec_spec, write_spec = specs
    for spec in specs:
        assert spec["type"] == "function"
        assert spec["strict"] is False
        assert spec["parameters"]["type"] == "object"
        assert spec["parameters"]["additionalProperties"] is False
    assert exec_spec["description"] == (
        "Runs a command in a PTY, returning output or a session ID for ongoing interaction."
    )
    assert write_spec["description"] == (
        "Writes characters to an existing unified exec session and returns recent output."
    )
    exec_props = exec_spec["parameters"]["properties"]
    write_props = write_spec["parameters"]["properties"]
    assert exec_spec["parameters"]["required"] == ["cmd"]
    assert write_spec["parameters"]["required"] == ["session_id"]
    assert {k: v["type"] for k, v in exec_props.items()} == {
        "cmd": "string",
        "workdir": "string",
        "shell": "string",
        "login": "boolean",
        "tty": "boolean",
        "yield_time_ms": "number",
        "max_output_tokens": "number",
    }
    assert {k: v["type"] for k, v in write_props.items()} == {
        "session_id": "number",
        "chars": "string",
        "yield_time_ms": "number",
        "max_output_tokens": "number",
    }
    assert exec_props["cmd"]["description"] == "Shell command to execute."
    assert exec_props["tty"]["description"] == (
        "Whether to allocate a TTY for the command. Defaults to false (plain pipes); "
        "set to true to open a PTY and access TTY process."
    )
    assert write_props["session_id"]["description"] == (
        "Identifier of the running unified exec session."
    )
    assert write_props["chars"]["description"] == (
        "Bytes to write to stdin (may be empty to poll)."
    )
    json.dumps(specs)  # plain JSON


def test_tool_specs_are_fresh_copies() -> None:
    first = tool_specs()
    del first[0]["parameters"]["properties"]["login"]
    first[1]["name"] = "changed"
    again = tool_specs()
    assert "login" in again[0]["parameters"]["properties"]
    assert again[1]["name"] == "write_stdin"
    assert UnifiedExecManager(ue.LocalPtyBackend()).tool_specs() == again


def test_manager_tool_specs_omit_login_when_login_shells_are_disabled() -> None:
    # §1.1: `login` is "only present in the schema when allow_login_shell".
    mgr = UnifiedExecManager(ue.LocalPtyBackend(), allow_login_shell=False)
    exec_props = mgr.tool_specs()[0]["parameters"]["properties"]
    assert "login" not in exec_props
    assert set(exec_props) == {
        "cmd",
        "workdir",
        "shell",
        "tty",
        "yield_time_ms",
        "max_output_tokens",
    }
