"""A scripted model on 127.0.0.1 that speaks the OpenAI Responses API over SSE.

The real codex CLI needs a model to run a turn. This one is a plain HTTP/1.1 server
(h11 over a trio socket, no network beyond loopback) that answers every
``POST .../responses`` with the next scripted reply, streamed as server-sent events in
the shape codex parses (`response.created`, `response.output_item.done` items,
`response.completed`), and records every request body it got, so a test can look at
what codex told the model: the instructions (with `AGENTS.md`), the environment
context, and every tool output (`function_call_output` / `custom_tool_call_output`).

A reply is a list of output items; helpers build the common ones. Once the script is
used up, every further request gets a plain assistant message, so a turn always ends.
Anything other than ``POST /responses`` (codex may ask for ``/models``) gets a 404.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio

from .._support import LINK_ERRORS, serving_tcp

__all__ = [
    "MockModel",
    "apply_patch_call",
    "assistant_message",
    "exec_call",
    "function_call",
    "last_output",
    "tool_outputs",
    "write_stdin_call",
]

Item = dict[str, Any]
# A reply: the output items, or a function of the request that builds them (to answer
# with what only the turn can know, such as a session id codex chose).
Reply = list[Item] | Callable[[dict[str, Any]], list[Item]]


def function_call(call_id: str, name: str, arguments: dict[str, Any]) -> Item:
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
    }


def exec_call(call_id: str, cmd: str, **extra: Any) -> Item:
    """An `exec_command` tool call (codex's unified-exec tool)."""
    return function_call(call_id, "exec_command", {"cmd": cmd, **extra})


def apply_patch_call(call_id: str, patch: str) -> Item:
    """`apply_patch` as the freeform (custom) tool codex offers to Responses models."""
    return {"type": "custom_tool_call", "call_id": call_id, "name": "apply_patch", "input": patch}


def write_stdin_call(call_id: str, session_id: int, chars: str, **extra: Any) -> Item:
    return function_call(
        call_id, "write_stdin", {"session_id": session_id, "chars": chars, **extra}
    )


def assistant_message(text: str, item_id: str = "msg_done") -> Item:
    return {
        "type": "message",
        "role": "assistant",
        "id": item_id,
        "content": [{"type": "output_text", "text": text}],
    }


def tool_outputs(request: dict[str, Any]) -> dict[str, Any]:
    """call_id -> output of every tool result in one recorded request's `input`."""
    out: dict[str, Any] = {}
    for item in request.get("input", []):
        if item.get("type") in ("function_call_output", "custom_tool_call_output"):
            out[item["call_id"]] = item.get("output")
    return out


def last_output(request: dict[str, Any]) -> str:
    """The text of the last tool output in a request (what the model just got)."""
    outs = [
        item.get("output")
        for item in request.get("input", [])
        if item.get("type") in ("function_call_output", "custom_tool_call_output")
    ]
    last = outs[-1] if outs else ""
    if isinstance(last, list):  # content items (e.g. view_image)
        return "".join(part.get("text", "") for part in last if isinstance(part, dict))
    return str(last)


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class MockModel:
    """Serve ``replies`` in order, one per ``POST .../responses``; record the requests."""

    def __init__(self, replies: list[Reply], final_text: str = "done") -> None:
        self._replies = list(replies)
        self._final = final_text
        self.requests: list[dict[str, Any]] = []
        self.other_paths: list[str] = []
        self.port = 0
        self._n = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _next_reply(self, request: dict[str, Any]) -> list[Item]:
        if not self._replies:
            return [assistant_message(self._final)]
        reply = self._replies.pop(0)
        return reply(request) if callable(reply) else reply

    def _events(self, items: list[Item]) -> bytes:
        self._n += 1
        rid = f"resp_{self._n}"
        out = [_sse({"type": "response.created", "response": {"id": rid}})]
        for item in items:
            out.append(_sse({"type": "response.output_item.done", "item": item}))
        usage = {
            "input_tokens": 0,
            "input_tokens_details": None,
            "output_tokens": 0,
            "output_tokens_details": None,
            "total_tokens": 0,
        }
        out.append(_sse({"type": "response.completed", "response": {"id": rid, "usage": usage}}))
        return b"".join(out)

    async def _send(self, stream: trio.SocketStream, conn: h11.Connection, ev: Any) -> None:
        data = conn.send(ev)
        if data:
            await stream.send_all(data)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(data)
                        if not data and conn.their_state is not h11.DONE:
                            return
                        continue
                    if isinstance(ev, h11.Request):
                        request = ev
                    elif isinstance(ev, h11.Data):
                        body += bytes(ev.data)
                    elif isinstance(ev, h11.EndOfMessage):
                        break
                    elif isinstance(ev, h11.ConnectionClosed):
                        return
                assert request is not None
                path = request.target.decode()
                if request.method == b"POST" and path.split("?")[0].endswith("/responses"):
                    req = json.loads(body)
                    self.requests.append(req)
                    payload = self._events(self._next_reply(req))
                    headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
                    await self._send(stream, conn, h11.Response(status_code=200, headers=headers))
                    await self._send(stream, conn, h11.Data(data=payload))
                else:
                    self.other_paths.append(f"{request.method.decode()} {path}")
                    payload = b'{"error":"not found"}'
                    headers = [
                        ("content-type", "application/json"),
                        ("content-length", str(len(payload))),
                    ]
                    await self._send(stream, conn, h11.Response(status_code=404, headers=headers))
                    await self._send(stream, conn, h11.Data(data=payload))
                await self._send(stream, conn, h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, *LINK_ERRORS):
            return
        finally:
            await stream.aclose()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MockModel]:
        async with serving_tcp(self._handle) as self.port:
            yield self
