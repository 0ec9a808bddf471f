"""The JSON-RPC envelope as the codex exec-server speaks it, and ndjson framing.

Outgoing messages carry no ``"jsonrpc"`` member (codex omits it); incoming ones may
or may not. Pure functions and attrs classes: no I/O here.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import attrs

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "SESSION_ATTACHED",
    "ErrorResponse",
    "Message",
    "MessageError",
    "NdjsonDecoder",
    "Notification",
    "Request",
    "RequestId",
    "Response",
    "decode",
    "encode",
    "parse_message",
    "to_wire",
]

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SESSION_ATTACHED = -32010

RequestId: TypeAlias = int | str


@attrs.frozen
class Request:
    id: RequestId
    method: str
    params: Any = None


@attrs.frozen
class Notification:
    method: str
    params: Any = None


@attrs.frozen
class Response:
    id: RequestId
    result: Any


@attrs.frozen
class ErrorResponse:
    id: RequestId
    code: int
    message: str


Message: TypeAlias = Request | Notification | Response | ErrorResponse


class MessageError(ValueError):
    """Input that is not a JSON-RPC message; the text says why (codex-style)."""


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def parse_message(obj: Any) -> Message:
    """Classify one decoded JSON value as a message, or raise MessageError."""
    if not isinstance(obj, dict):
        raise MessageError("expected a JSON-RPC object")
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str):
            raise MessageError("invalid type: method must be a string")
        params = obj.get("params")
        if "id" in obj:
            return Request(id=_check_id(obj["id"]), method=method, params=params)
        return Notification(method=method, params=params)
    if "id" in obj and "result" in obj:
        return Response(id=_check_id(obj["id"]), result=obj["result"])
    if "id" in obj and "error" in obj:
        err = obj["error"]
        if (
            not isinstance(err, dict)
            or not isinstance(err.get("code"), int)
            or not isinstance(err.get("message"), str)
        ):
            raise MessageError("invalid error object")
        return ErrorResponse(id=_check_id(obj["id"]), code=err["code"], message=err["message"])
    raise MessageError("expected a JSON-RPC object")


def _check_id(value: Any) -> RequestId:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MessageError("invalid type: id must be an integer or a string")
    return value


def decode(text: str | bytes) -> Message:
    """One message from one frame (a websocket message or one ndjson line)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MessageError(_json_error(exc)) from None
    except UnicodeDecodeError as exc:
        raise MessageError(f"invalid UTF-8: {exc.reason}") from None
    except (ValueError, RecursionError) as exc:  # huge integers, absurd nesting
        raise MessageError(f"unacceptable JSON: {exc}") from None
    return parse_message(obj)


def to_wire(message: Message) -> dict[str, Any]:
    if isinstance(message, Request):
        out: dict[str, Any] = {"id": message.id, "method": message.method}
        if message.params is not None:
            out["params"] = message.params
        return out
    if isinstance(message, Notification):
        out = {"method": message.method}
        if message.params is not None:
            out["params"] = message.params
        return out
    if isinstance(message, Response):
        return {"id": message.id, "result": message.result}
    return {"error": {"code": message.code, "message": message.message}, "id": message.id}


def encode(message: Message) -> str:
    """Compact JSON, no newline (the framing adds it where needed)."""
    return json.dumps(to_wire(message), separators=(",", ":"), ensure_ascii=False)


class NdjsonDecoder:
    """Splits a byte stream into lines; refuses a line longer than ``max_line``.

    A too-long line is an error for that line only: the decoder skips to the next
    newline and goes on, so one oversized message cannot wedge the connection.
    """

    def __init__(self, max_line: int = 64 * 1024 * 1024) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | MessageError]:
        out: list[bytes | MessageError] = []
        self._buf += data
        start = 0
        search_from = self._scanned
        while True:
            nl = self._buf.find(b"\n", search_from)
            if nl < 0:
                break
            line = bytes(self._buf[start:nl])
            start = search_from = nl + 1
            if self._skipping:
                self._skipping = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self._max:
                out.append(MessageError(f"message longer than {self._max} bytes"))
            elif line.strip():
                out.append(line)
        del self._buf[:start]
        self._scanned = len(self._buf)
        held = len(self._buf) - (1 if self._buf.endswith(b"\r") else 0)  # \r may end a line
        if held > self._max:
            self._buf.clear()
            self._scanned = 0
            if not self._skipping:
                self._skipping = True
                out.append(MessageError(f"message longer than {self._max} bytes"))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held back."""
        return len(self._buf)
