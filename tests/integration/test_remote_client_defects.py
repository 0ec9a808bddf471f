"""Regression tests for the remote client's review defects (review-2026-12: 5, 8, 11,
13, 19, 22, 25, 29).

Where a fault needs a server that misbehaves on cue (an evicted seq, a late seq, a
process failing on the server), ``_scripted_exec_server.py`` plays that server over
stdio; everything else runs against our real exec-server over real websockets.
"""

from __future__ import annotations

import functools
import pathlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import unified_exec as ue
from unified_exec._protocol._limits import Limits

SCRIPTED = str(pathlib.Path(__file__).with_name("_scripted_exec_server.py"))


def scripted(scenario: str, *extra: str) -> list[str]:
    return [sys.executable, SCRIPTED, scenario, *extra]


@asynccontextmanager
async def our_ws_server() -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(ue.serve_exec_server))
        yield url
        nursery.cancel_scope.cancel()


async def all_events(backend: ue.RemoteExecBackend, req: ue.ExecRequest) -> list[object]:
    async with ue.open_process(backend, req) as proc:
        return [ev async for ev in proc.events()]


# -- defect 5: a gap refetch invented an exit ---------------------------------------------


async def test_an_evicted_seq_is_reported_lost_not_turned_into_an_exit() -> None:
    with trio.fail_after(20):
        async with ue.RemoteExecBackend.connect_stdio(scripted("gap")) as backend:
            events = await all_events(backend, ue.ExecRequest(["x"]))
    assert events == [
        ue.OutputEvent(1, "stdout", b"first\n"),
        ue.LostEvent(2, 2),
        ue.ExitedEvent(3, 0),
        ue.ClosedEvent(4),
    ]


# -- defect 22: the gap grace ended at the next notification -------------------------------


async def test_a_late_seq_within_the_grace_costs_no_read(tmp_path: pathlib.Path) -> None:
    reads = tmp_path / "reads"
    with trio.fail_after(20):
        async with ue.RemoteExecBackend.connect_stdio(scripted("reorder", str(reads))) as backend:
            events = await all_events(backend, ue.ExecRequest(["x"]))
    outputs = [e.data for e in events if isinstance(e, ue.OutputEvent)]
    assert outputs == [b"one\n", b"two\n", b"three\n"]
    assert not reads.exists(), "seq 1 came 50 ms late, well within the grace: no read"


# -- defect 11: a process that failed on the server ------------------------------------------


async def test_a_failure_on_the_server_reaches_the_client_with_its_text() -> None:
    with trio.fail_after(20):
        async with (
            ue.RemoteExecBackend.connect_stdio(scripted("failed")) as backend,
            ue.open_process(backend, ue.ExecRequest(["x"])) as proc,
        ):
            state = await proc.wait()
            res = await proc.read()
    assert state == ue.ProcessState(
        has_exited=True, exit_code=None, failure_message="sandbox died: disk on fire"
    )
    assert [c.data for c in res.chunks] == [b"partial\n"]


async def test_the_old_failure_form_exit_minus_one_is_accepted() -> None:
    with trio.fail_after(20):
        async with ue.RemoteExecBackend.connect_stdio(scripted("failed-old")) as backend:
            events = await all_events(backend, ue.ExecRequest(["x"]))
    assert events[1:] == [ue.ExitedEvent(2, -1), ue.ClosedEvent(3)]


# -- defect 8: one big write killed the link ------------------------------------------------


async def test_a_write_bigger_than_a_frame_is_split_and_the_link_lives() -> None:
    size = 52 * 1024 * 1024
    with trio.fail_after(120):
        async with (
            our_ws_server() as url,
            ue.RemoteExecBackend.connect(url) as backend,
            ue.open_process(backend, ue.ExecRequest(["sleep", "60"])) as bystander,
            ue.open_process(backend, ue.ExecRequest(["wc", "-c"], pipe_stdin=True)) as wc,
        ):
            assert await wc.write(b"x" * size) is ue.WriteStatus.ACCEPTED
            await wc.close_stdin()
            assert (await wc.wait()).exit_code == 0
            res = await wc.read()
            assert b"".join(c.data for c in res.chunks).strip() == str(size).encode()
            assert not bystander.state.has_exited


async def test_a_message_over_the_limit_is_refused_before_sending() -> None:
    limits = Limits(max_message_bytes=64 * 1024, max_write_chunk=16 * 1024)
    with trio.fail_after(30):
        async with (
            our_ws_server() as url,
            ue.RemoteExecBackend.connect(url, limits=limits) as backend,
        ):
            with pytest.raises(ue.InvalidRequestError, match="limit"):
                await backend.start(ue.ExecRequest(["echo", "y" * 100_000]))
            async with ue.open_process(backend, ue.ExecRequest(["wc", "-c"], pipe_stdin=True)) as p:
                assert await p.write(b"z" * 200_000) is ue.WriteStatus.ACCEPTED  # 13 frames
                await p.close_stdin()
                assert (await p.wait()).exit_code == 0
                out = b"".join(c.data for c in (await p.read()).chunks)
    assert out.strip() == b"200000"


# -- defect 13: a lone surrogate raised a raw UnicodeEncodeError ------------------------------


async def test_a_lone_surrogate_is_a_typed_error_and_the_link_lives() -> None:
    with trio.fail_after(30):
        async with our_ws_server() as url, ue.RemoteExecBackend.connect(url) as backend:
            with pytest.raises(ue.InvalidRequestError, match="UTF-8"):
                await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(["echo", "caf\udce9"]))
            async with ue.open_process(backend, ue.ExecRequest(["echo", "ok"])) as proc:
                assert (await proc.wait()).exit_code == 0


# -- defect 19: connect_stdio's stderr buffer ------------------------------------------------


async def test_the_servers_stderr_tail_is_bounded() -> None:
    # A 4 MB stderr line, then the "server" dies: the loss message carries a bounded tail.
    argv = ["sh", "-c", "head -c 4000000 /dev/zero | tr '\\0' x >&2; echo >&2; exit 3"]
    with trio.fail_after(30), pytest.raises(ue.TransportLostError) as info:
        async with ue.RemoteExecBackend.connect_stdio(argv):
            pass
    message = str(info.value)
    assert "code 3" in message
    assert 1000 < len(message) < 20_000


# -- defect 25: foreign exceptions from connect ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("ws://127.0.0.1:99999", None),
        ("ws://[::1", None),
        ("http://127.0.0.1:1", None),
        ("ws://127.0.0.1:1", "t\n"),
        ("ws://127.0.0.1:1", "two words"),
    ],
)
async def test_bad_urls_and_tokens_are_invalid_request_errors(url: str, token: str | None) -> None:
    with pytest.raises(ue.InvalidRequestError):
        async with ue.RemoteExecBackend.connect(url, token=token):
            pass


async def test_a_wrong_token_says_http_401() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(ue.serve_exec_server, token="right"))
            with pytest.raises(ue.TransportLostError, match="HTTP 401"):
                async with ue.RemoteExecBackend.connect(url, token="wrong"):
                    pass
            nursery.cancel_scope.cancel()


async def test_a_malformed_initialize_is_a_remote_protocol_error() -> None:
    with trio.fail_after(20), pytest.raises(ue.RemoteProtocolError, match="sessionId"):
        async with ue.RemoteExecBackend.connect_stdio(scripted("badinit")):
            pass


# -- defect 29: aclose() left the backend usable -----------------------------------------------


async def test_aclose_really_closes() -> None:
    with trio.fail_after(30):
        async with our_ws_server() as url, ue.RemoteExecBackend.connect(url) as backend:
            proc = await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(["sleep", "60"]))
            await backend.aclose()
            state = await proc.wait()
            assert state.has_exited and state.exit_code in (137, None)
            with pytest.raises(ue.InvalidRequestError, match="closed"):
                await backend.start(ue.ExecRequest(["true"]))
            await backend.aclose()  # idempotent
