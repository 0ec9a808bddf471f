"""The JSON-RPC envelope as the codex exec-server speaks it, and ndjson framing.

Outgoing messages carry no ``"jsonrpc"`` member (codex omits it); incoming ones may
or may not. Pure functions and attrs classes: no I/O here.

Encoding goes through msgspec's C encoder: ``bytes`` anywhere in a message go out
as standard padded base64 strings, written straight into the output without a
second scan (an output notification of 256 KiB costs ~0.25 ms instead of ~1.3 ms
with ``binascii`` + ``json.dumps``). Decoding stays with the standard library, whose
``object_pairs_hook`` is what refuses duplicate keys.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any, TypeAlias

import attrs
import msgspec

from ._limits import DEFAULT_LIMITS

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
    "count_json_values",
    "decode",
    "decode_frame",
    "encode",
    "encode_bytes",
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


# A JSON string token, escapes included (the unrolled form keeps the regex linear).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BLANKS = re.compile(r"[ \t\r\n]+")


def count_json_values(text: str) -> int:
    """How many JSON values (scalars, arrays, objects; not keys) ``text`` holds.

    Counted on the text, before parsing, so a message of millions of tiny values is
    refused without first being built in memory. Exact for well-formed JSON: every
    member of a container after the first follows a comma, and every non-empty
    container holds a first member.
    """
    bare = _BLANKS.sub("", _STRING.sub('""', text))
    commas = bare.count(",")
    opened = bare.count("[") + bare.count("{")
    empty = bare.count("[]") + bare.count("{}")
    return 1 + commas + opened - empty


def _may_exceed(text: str, max_values: int) -> bool:
    """A cheap upper bound first: commas and brackets, strings not skipped. A frame of
    one big base64 string (a write, an output chunk) never pays for the exact scan."""
    if len(text) <= 2 * max_values:  # a value takes a character, and all but one a comma
        return False
    return 1 + text.count(",") + text.count("[") + text.count("{") > max_values


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MessageError(f"duplicate field `{key}`")
            seen.add(key)
    return obj


# One decoder for every frame: json.loads with a hook builds a new JSONDecoder per
# call, a third of the cost of decoding a small frame (7 µs here). It keeps no state
# between calls, so sharing it is safe.
_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_duplicates)


def decode(text: str | bytes, *, max_values: int = DEFAULT_LIMITS.max_json_values) -> Message:
    """One message from one frame (a websocket message or one ndjson line).

    As codex (#33013): at most ``max_values`` JSON values, and no object with a key
    given twice (which of two values would win is not something peers agree on).
    """
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(f"invalid UTF-8: {exc.reason}") from None
    if _may_exceed(text, max_values) and count_json_values(text) > max_values:
        raise MessageError(f"message has more than {max_values} JSON values")
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise MessageError(_json_error(exc)) from None
    except MessageError:
        raise
    except (ValueError, RecursionError) as exc:  # huge integers, absurd nesting
        raise MessageError(f"unacceptable JSON: {exc}") from None
    return parse_message(obj)


# The fast path of decode_frame: one big base64 "chunk" in params (a process/output
# notification, a process/write request), decoded straight from the frame's bytes.
_CHUNK_KEY = b'"chunk":"'
_PLACEHOLDER = b"\\u0000"  # JSON for U+0000: stands in for the chunk while the rest is decoded
_CHUNK_KEY_TEXT = _CHUNK_KEY.decode()
_PLACEHOLDER_TEXT = _PLACEHOLDER.decode()
_BASE64_STRING = msgspec.json.Decoder(bytes)
_FAST_FROM = 4096  # bytes; below this the standard decode costs little


def decode_frame(
    frame: str | bytes, *, max_values: int = DEFAULT_LIMITS.max_json_values
) -> Message:
    """``decode(frame)``, except that a request's or notification's ``params.chunk``
    may come back as the bytes its base64 stands for (its structure hook takes both).

    A 256 KiB output chunk is ~350 KB of JSON; the standard decoder scans it as text
    (~0.3-0.6 ms here) before base64 decodes it again. Here the chunk's string goes
    to msgspec's C base64 decoder, straight from the frame, and only the rest of the
    frame (the chunk replaced by a placeholder, an escaped U+0000) goes through
    ``decode`` with all of its checks. The result is the same message, or the same
    refusal: the placeholder is a string where the chunk's string was (same JSON
    value count), and it can be told from every other string, since the fast path
    takes only frames without a backslash (no escapes: the chunk's string ends at the
    next quote, and no string of the frame's own can be U+0000). Whatever it cannot
    vouch for goes the standard way. A frame may be bytes (an ndjson line) or text
    (a websocket text message, already UTF-8 decoded): the same rules for both.
    """
    found = _big_chunk(frame)
    if found is not None:
        start, end, chunk = found
        if isinstance(frame, bytes):
            rest: str | bytes = frame[:start] + _PLACEHOLDER + frame[end:]
        else:
            rest = frame[:start] + _PLACEHOLDER_TEXT + frame[end:]
        try:
            message = decode(rest, max_values=max_values)
        except MessageError:
            message = None  # the standard way says what is wrong, in its own words
        params = getattr(message, "params", None)
        if message is not None and isinstance(params, dict) and params.get("chunk") == "\x00":
            params["chunk"] = chunk
            return message
    return decode(frame, max_values=max_values)


def _big_chunk(frame: str | bytes) -> tuple[int, int, bytes] | None:
    """Where the text of a big frame's ``"chunk"`` string starts and ends, and its
    bytes; None unless the fast path can vouch for it."""
    if len(frame) < _FAST_FROM:
        return None
    found = _locate_bytes(frame) if isinstance(frame, bytes) else _locate_text(frame)
    if found is None:
        return None
    start, end, piece = found
    try:
        return start, end, _BASE64_STRING.decode(piece)
    except (msgspec.DecodeError, UnicodeEncodeError):  # not base64; not UTF-8 (a str frame)
        return None


def _locate_bytes(frame: bytes) -> tuple[int, int, memoryview] | None:
    at = frame.find(_CHUNK_KEY, 0, 512)
    # Only a key right after "{" or ",": the quote opens the key "chunk" itself.
    if at <= 0 or frame[at - 1] not in b"{," or frame.find(b'"method":', 0, 64) < 0:
        return None
    start = at + len(_CHUNK_KEY)
    end = frame.find(b'"', start)
    if end < 0 or frame.find(b"\\") >= 0:  # one memchr each
        return None
    return start, end, memoryview(frame)[start - 1 : end + 1]


def _locate_text(frame: str) -> tuple[int, int, str] | None:
    """As _locate_bytes, on a frame that is text already (a websocket message)."""
    at = frame.find(_CHUNK_KEY_TEXT, 0, 512)
    if at <= 0 or frame[at - 1] not in "{," or frame.find('"method":', 0, 64) < 0:
        return None
    start = at + len(_CHUNK_KEY_TEXT)
    end = frame.find('"', start)
    if end < 0 or frame.find("\\") >= 0:
        return None
    return start, end, frame[start - 1 : end + 1]


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


_SURROGATE = re.compile("[\ud800-\udfff]")
_ENCODER = msgspec.json.Encoder()


def _bytes_as_base64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return binascii.b2a_base64(value, newline=False).decode("ascii")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode_slowly(wire: dict[str, Any]) -> str:
    text = json.dumps(wire, separators=(",", ":"), ensure_ascii=False, default=_bytes_as_base64)
    if not text.isascii() and _SURROGATE.search(text) is not None:
        text = _SURROGATE.sub("\ufffd", text)
    return text


def encode_bytes(message: Message) -> bytes:
    """``encode(message)`` as UTF-8 bytes, without the detour through ``str``."""
    wire = to_wire(message)
    try:
        return _ENCODER.encode(wire)
    except Exception:  # a lone surrogate, or a type msgspec does not take
        return _encode_slowly(wire).encode("utf-8")


def encode(message: Message) -> str:
    """Compact JSON, no newline (the framing adds it where needed).

    ``bytes`` values (and bytearray, memoryview) become standard padded base64
    strings. The text is always encodable as UTF-8: a lone surrogate (say, from a
    ``\\ud800`` escape a peer sent and an error message echoes) becomes U+FFFD,
    since no UTF-8 peer, codex's serde included, can take it back in any form.
    """
    wire = to_wire(message)
    try:
        return _ENCODER.encode(wire).decode("utf-8")
    except Exception:  # a lone surrogate, or a type msgspec does not take
        return _encode_slowly(wire)


class NdjsonDecoder:
    """Splits a byte stream into lines; refuses a line longer than ``max_line``.

    A too-long line is an error for that line only: the decoder skips to the next
    newline and goes on, so one oversized message cannot wedge the connection.

    An unfinished line is kept as the pieces it came in, joined once when its newline
    arrives: a 350 KB frame read 64 KiB at a time is copied once, not grown, sliced
    and copied again (~0.5 ms a frame here, as much as decoding it).
    """

    def __init__(self, max_line: int = 64 * 1024 * 1024) -> None:
        self._max = max_line
        self._parts: list[bytes] = []  # the unfinished line (dropped while skipping)
        self._held = 0  # their bytes
        self._skipping = False  # inside a line already refused as too long

    def feed(self, data: bytes) -> list[bytes | MessageError]:
        out: list[bytes | MessageError] = []
        if type(data) is not bytes:
            data = bytes(data)
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            if self._parts:
                with memoryview(data) as view:
                    line = b"".join([*self._parts, view[start:nl]])
                self._parts.clear()
                self._held = 0
            else:
                line = data[start:nl]
            start = nl + 1
            if self._skipping:
                self._skipping = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self._max:
                out.append(MessageError(f"message longer than {self._max} bytes"))
            elif line.strip():
                out.append(line)
        if start < len(data) and not self._skipping:
            self._parts.append(data[start:] if start else data)
            self._held += len(data) - start
            held = self._held - (1 if data.endswith(b"\r") else 0)  # \r may end a line
            if held > self._max:
                self._parts.clear()
                self._held = 0
                self._skipping = True
                out.append(MessageError(f"message longer than {self._max} bytes"))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held back."""
        return self._held
