"""A raw JSON-RPC peer for the stress tests: bytes in, parsed messages out.

No client library in between: the fuzzer and the chaos driver must be able to send
what no well-behaved client would. Over websocket a frame that is valid UTF-8 goes as
a text message, anything else as a binary message; over stdio a frame is one line.
Everything the server sends is recorded, and whatever is not a JSON object is kept
in ``bad`` (the server must never send such a thing).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import trio
import trio_websocket

from ._common import SERVE

MAX_FRAME = 256 * 1024 * 1024


def frame_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class Peer:
    """Set ``slim`` to keep only the length of output chunks (for floods)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.slim = False
        self.output_bytes = 0
        self._resume = trio.Event()
        self._resume.set()
        self.received: list[dict[str, Any]] = []
        self.responses: dict[str, dict[str, Any]] = {}
        self.bad: list[str] = []
        self.closed = False
        self._changed = trio.Event()

    # -- what the transports call ---------------------------------------------------

    def _got(self, frame: str | bytes) -> None:
        try:
            msg = json.loads(frame)
        except ValueError:
            self.bad.append(f"not JSON: {frame[:200]!r}")
            msg = None
        if msg is not None and not isinstance(msg, dict):
            self.bad.append(f"not an object: {frame[:200]!r}")
            msg = None
        if msg is not None and msg.get("method") == "process/output" and self.slim:
            params = msg.get("params")
            if isinstance(params, dict) and isinstance(params.get("chunk"), str):
                chunk = params["chunk"]
                self.output_bytes += (
                    len(chunk) * 3 // 4 - len(chunk[-2:]) + len(chunk[-2:].strip("="))
                )
                params["chunk"] = ""
        if msg is not None:
            self.received.append(msg)
            if "id" in msg and ("result" in msg or "error" in msg):
                self.responses[frame_key(msg["id"])] = msg
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def pause(self) -> None:
        """Stop reading from the connection (the transport's buffers then fill up)."""
        self._resume = trio.Event()

    def resume(self) -> None:
        self._resume.set()

    def _lost(self) -> None:
        self.closed = True
        self._poke()

    async def _send_raw(self, frame: bytes) -> None:
        raise NotImplementedError

    # -- what tests call -------------------------------------------------------------

    async def send(self, frame: bytes | str | dict[str, Any]) -> bool:
        """Send one frame; False if the connection is gone."""
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        if isinstance(frame, str):
            frame = frame.encode("utf-8", "surrogatepass")
        if self.closed:
            return False
        try:
            await self._send_raw(frame)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio_websocket.ConnectionClosed,
            OSError,
        ):
            self._lost()
            return False
        return True

    async def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until predicate() holds; False on timeout or when the link is gone."""
        with trio.move_on_after(timeout):
            while not predicate():
                if self.closed:
                    return bool(predicate())
                await self._changed.wait()
            return True
        return False

    async def response(self, rid: Any, timeout: float) -> dict[str, Any] | None:
        key = frame_key(rid)
        await self.wait_for(lambda: key in self.responses, timeout)
        return self.responses.get(key)

    async def call(
        self, rid: Any, method: str, params: Any = None, timeout: float = 30
    ) -> dict[str, Any] | None:
        msg: dict[str, Any] = {"id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        if not await self.send(msg):
            return None
        return await self.response(rid, timeout)

    async def handshake(self, timeout: float = 30) -> dict[str, Any] | None:
        reply = await self.call("init", "initialize", {"clientName": "stress"}, timeout)
        if reply is not None and "result" in reply:
            await self.send({"method": "initialized", "params": {}})
        return reply

    def events(self, process_id: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self.received
            if "method" in m
            and "id" not in m
            and isinstance(m.get("params"), dict)
            and m["params"].get("processId") == process_id
        ]

    def closed_seen(self, process_id: str) -> bool:
        return any(m["method"] == "process/closed" for m in self.events(process_id))


class _WsPeer(Peer):
    def __init__(self, ws: trio_websocket.WebSocketConnection, name: str) -> None:
        super().__init__(name)
        self.ws = ws

    async def _send_raw(self, frame: bytes) -> None:
        try:
            text: str | bytes = frame.decode("utf-8")
        except UnicodeDecodeError:
            text = frame
        await self.ws.send_message(text)

    async def reader(self) -> None:
        try:
            while True:
                await self._resume.wait()
                self._got(await self.ws.get_message())
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self._lost()


@contextlib.asynccontextmanager
async def ws_peer(
    url: str, headers: list[tuple[bytes, bytes]], *, connect_timeout: float = 20
) -> AsyncIterator[Peer]:
    """A raw websocket connection; leaving the block closes it (or just drops it)."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(connect_timeout):
            ws = await trio_websocket.connect_websocket_url(
                nursery, url, extra_headers=headers, max_message_size=MAX_FRAME
            )
        peer = _WsPeer(ws, f"ws {url}")
        nursery.start_soon(peer.reader)
        try:
            yield peer
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(3),
                contextlib.suppress(Exception),
            ):
                await ws.aclose()
            nursery.cancel_scope.cancel()


class _StdioPeer(Peer):
    def __init__(self, proc: trio.Process) -> None:
        super().__init__("stdio")
        self.proc = proc

    async def _send_raw(self, frame: bytes) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(frame + b"\n")

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.proc.stdin.aclose()

    async def reader(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        try:
            while True:
                await self._resume.wait()
                data = await self.proc.stdout.receive_some(1 << 20)
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._got(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if buf.strip():
                self.bad.append(f"unterminated line at EOF: {buf[:200]!r}")
            self._lost()


@contextlib.asynccontextmanager
async def stdio_peer(stderr_path: str, extra: list[str] | None = None) -> AsyncIterator[_StdioPeer]:
    """``unified-exec serve --listen stdio`` as a subprocess and a raw peer to it.

    Leaving the block closes stdin and waits (bounded) for the server to exit; a
    server still running after that is killed by pid. ``peer.proc.returncode`` is then
    the exit status.
    """
    with open(stderr_path, "ab") as err:
        proc = await trio.lowlevel.open_process(
            [*SERVE, "--listen", "stdio", *(extra or [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    peer = _StdioPeer(proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.reader)
            try:
                yield peer
            finally:
                with trio.CancelScope(shield=True):
                    await peer.close_stdin()
                    with trio.move_on_after(20):
                        await proc.wait()
                    if proc.returncode is None:
                        with contextlib.suppress(OSError):
                            os.kill(proc.pid, 9)
                        await proc.wait()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, 9)
                await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()
