"""Hostile *server* input against our client: only typed errors may come out.

The brief's rule for public APIs is "nothing foreign escapes": whatever an exec-server
sends, ``RemoteExecBackend`` and the processes it hands out raise ``UnifiedExecError``
subclasses or report the trouble as state — never a ``KeyError``, ``TypeError``,
``binascii.Error`` or a corrupted trio run.

A fake server is used here, on purpose: a real exec-server cannot be made to send
malformed results and notifications on demand. It is a real websocket server on
127.0.0.1 (trio-websocket), answering ``initialize`` and each later request with a
Hypothesis-chosen mix of valid and broken frames, and pushing broken notifications
for the process the client started.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import trio
import trio_websocket
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import unified_exec as ue

from ._cases import json_values
from ._common import LONG, pick, record

EXAMPLES = pick(6, 150)


def _link() -> dict[str, Any]:
    """No reconnect and no keepalive, where the client lets us say so: a hostile
    server that hangs up is not worth 30 s of retries per example."""
    try:
        from unified_exec.backends._remote_link import LinkSettings
    except ImportError:
        return {}
    return {"link": LinkSettings(reconnect_budget=0, ping_interval=0)}


_INIT_OK = {
    "sessionId": "s-1",
    "environmentInfo": {"shell": {"name": "sh", "path": "/bin/sh"}, "cwd": "file:///tmp"},
    "extensions": ["process/resize", "process/closeStdin"],
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _init_replies() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just({"result": _INIT_OK}),
        st.just({"result": _INIT_OK}),
        st.just({"result": {**_INIT_OK, "sessionId": 5}}),
        st.just({"result": {**_INIT_OK, "environmentInfo": "x"}}),
        st.just({"result": {**_INIT_OK, "extensions": "process/resize"}}),
        st.just({"result": {**_INIT_OK, "extensions": [1, None]}}),
        st.just({"result": None}),
        st.just({"error": {"code": -32600, "message": "no"}}),
        st.just({"error": "broken"}),
        json_values.map(lambda v: {"result": v}),
    )


def _notification(pid: str) -> st.SearchStrategy[Any]:
    seq = st.one_of(st.integers(1, 6), st.sampled_from([0, -1, 2**64, 2**70, 1.5, "3", None, True]))
    chunk = st.one_of(st.just(_b64(b"hello\n")), st.sampled_from(["!!", "abc", 5, None, ""]))
    target = st.one_of(st.just(pid), st.just(pid), st.sampled_from(["other", 7, None]))
    return st.one_of(
        st.fixed_dictionaries(
            {
                "method": st.just("process/output"),
                "params": st.fixed_dictionaries(
                    {
                        "processId": target,
                        "seq": seq,
                        "stream": st.sampled_from(["stdout", "stderr", "pty", "bogus", 3]),
                        "chunk": chunk,
                    }
                ),
            }
        ),
        st.fixed_dictionaries(
            {
                "method": st.just("process/exited"),
                "params": st.fixed_dictionaries(
                    {
                        "processId": target,
                        "seq": seq,
                        "exitCode": st.sampled_from([0, 1, -1, 2**31, 2**40, "0", None, 1.5]),
                    }
                ),
            }
        ),
        st.fixed_dictionaries(
            {
                "method": st.just("process/closed"),
                "params": st.fixed_dictionaries({"processId": target, "seq": seq}),
            }
        ),
        st.fixed_dictionaries(
            {"method": st.sampled_from(["process/output", "bogus/x"]), "params": json_values}
        ),
        json_values,
        st.fixed_dictionaries({"id": st.one_of(st.integers(), st.text()), "result": json_values}),
        st.just({"id": 99999, "error": {"code": "x"}}),
    )


def _reply_for(method: str) -> st.SearchStrategy[Any]:
    ok: dict[str, Any] = {
        "process/start": {"processId": "?", "sandboxType": "none"},
        "process/read": {
            "chunks": [{"seq": 1, "stream": "stdout", "chunk": _b64(b"hi")}],
            "nextSeq": 4,
            "exited": True,
            "exitCode": 0,
            "closed": True,
            "failure": None,
        },
        "process/write": {"status": "accepted"},
        "process/terminate": {"running": False},
    }
    broken_read = st.fixed_dictionaries(
        {
            "chunks": st.one_of(json_values, st.just([{"seq": "x", "chunk": "!!"}])),
            "nextSeq": st.sampled_from([0, -5, 2**70, "4", None]),
            "exited": st.sampled_from([True, "yes", None]),
            "exitCode": st.sampled_from([0, None, "1", 2**40]),
            "closed": st.booleans(),
            "failure": st.sampled_from([None, 5, "sandbox died"]),
        }
    )
    return st.one_of(
        st.just({"result": ok.get(method, {})}),
        st.just({"result": ok.get(method, {})}),
        json_values.map(lambda v: {"result": v}),
        broken_read.map(lambda v: {"result": v}),
        st.just({"result": {"status": "weird"}}),
        st.just({"error": {"code": -32603, "message": "boom"}}),
        st.just({"error": {"code": "x", "message": 5}}),
        st.just({"noise": True}),  # neither result nor error
    )


def _is_typed(exc: BaseException) -> list[BaseException]:
    """The leaves of ``exc`` that are foreign (not ours, not a cancellation)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _is_typed(sub)]
    if isinstance(exc, ue.UnifiedExecError | trio.Cancelled | trio.TooSlowError):
        return []
    return [exc]


def test_client_survives_a_hostile_server() -> None:
    foreign: list[str] = []
    outcomes: dict[str, int] = {}
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        derandomize=not LONG,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        # Most examples get past the handshake: the interesting input comes after it.
        init_reply: Any = {"result": _INIT_OK}
        if data.draw(st.integers(0, 9)) >= 7:
            init_reply = data.draw(_init_replies(), label="initialize reply")

        async def handler(request: trio_websocket.WebSocketRequest) -> None:
            ws = await request.accept()
            try:
                while True:
                    msg = json.loads(await ws.get_message())
                    if "id" not in msg:
                        continue  # the initialized notification
                    method = msg.get("method", "")
                    if method == "initialize":
                        await ws.send_message(json.dumps({"id": msg["id"], **init_reply}))
                        continue
                    reply = data.draw(_reply_for(method))
                    if method == "process/start":
                        pid = msg["params"]["processId"]
                        if reply.get("result") == {"processId": "?", "sandboxType": "none"}:
                            reply = {"result": {"processId": pid, "sandboxType": "none"}}
                        await ws.send_message(json.dumps({"id": msg["id"], **reply}))
                        pushes = data.draw(st.lists(_notification(pid), max_size=12))
                        for push in pushes:
                            await ws.send_message(json.dumps(push))
                        if data.draw(st.booleans()):
                            await ws.send_message(b"\xff\xfe not json")
                    else:
                        await ws.send_message(json.dumps({"id": msg["id"], **reply}))
                    if method == "process/terminate":
                        # Hang up: otherwise the client's shutdown waits out its bounds
                        # for a closed event that this server will never send.
                        await ws.aclose()
                        return
            except (trio_websocket.ConnectionClosed, ValueError):
                pass

        async def main() -> str:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
                )
                url = f"ws://127.0.0.1:{server.port}"
                outcome = "ok"
                try:
                    with trio.move_on_after(10):
                        async with ue.RemoteExecBackend.connect(
                            url, request_timeout=1, **_link()
                        ) as backend:
                            proc = await ue.UnifiedExecProcess.start(
                                backend, ue.ExecRequest(argv=["echo", "hi"], pipe_stdin=True)
                            )
                            with trio.move_on_after(0.5):
                                async for _ in proc.events():
                                    pass
                            for op in (proc.read, lambda: proc.write(b"x"), proc.terminate):
                                with trio.move_on_after(1.5):
                                    try:
                                        await op()
                                    except ue.UnifiedExecError:
                                        pass
                            outcome = "ran" if proc.closed else "still-open"
                except BaseException as exc:  # sorted below: typed or foreign
                    leaves = _is_typed(exc)
                    if leaves:
                        foreign.extend(f"{type(e).__name__}: {e}"[:300] for e in leaves)
                        outcome = "FOREIGN"
                    else:
                        outcome = type(exc).__name__
                nursery.cancel_scope.cancel()
                return outcome

        outcome = trio.run(main)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert outcome != "FOREIGN", foreign[-3:]

    try:
        run()
    finally:
        record(
            "client_fuzz",
            examples=sum(outcomes.values()),
            outcomes=dict(sorted(outcomes.items())),
            foreign_exceptions=len(foreign),
            examples_of_foreign=sorted(set(foreign))[:5],
            seconds=round(time.monotonic() - started, 1),
        )
