"""Params and results of the exec-server process methods (codex 0.169.0 shapes).

Field names are snake_case here and camelCase on the wire; ``bytes`` fields travel
as standard padded base64. One private cattrs converter does both directions and is
strict about types, so a bad request gets a precise -32602 instead of a crash.
"""

from __future__ import annotations

import binascii
import functools
import typing
from typing import Annotated, Any, Literal, TypeVar

import attrs
import cattrs
import msgspec
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

__all__ = [
    "CLOSED",
    "EXITED",
    "INITIALIZE",
    "INITIALIZED",
    "OUTPUT",
    "PROCESS_CLOSE_STDIN",
    "PROCESS_READ",
    "PROCESS_RESIZE",
    "PROCESS_SIGNAL",
    "PROCESS_START",
    "PROCESS_TERMINATE",
    "PROCESS_WRITE",
    "START_TTY_SIZE",
    "CloseStdinParams",
    "ClosedParams",
    "I32",
    "U64",
    "ExitedParams",
    "InitializeParams",
    "InitializeResult",
    "OutputParams",
    "ParamsError",
    "ReadChunk",
    "ReadParams",
    "ReadResult",
    "ResizeParams",
    "SignalParams",
    "StartParams",
    "StartResult",
    "TerminateParams",
    "TerminateResult",
    "WriteParams",
    "WriteResult",
    "output_params",
    "structure",
    "unstructure",
    "unstructure_raw",
]

INITIALIZE = "initialize"
INITIALIZED = "initialized"
PROCESS_START = "process/start"
PROCESS_READ = "process/read"
PROCESS_WRITE = "process/write"
PROCESS_SIGNAL = "process/signal"
PROCESS_TERMINATE = "process/terminate"
PROCESS_RESIZE = "process/resize"  # our extensions, announced in initialize
PROCESS_CLOSE_STDIN = "process/closeStdin"
START_TTY_SIZE = "process/start.ttySize"
OUTPUT = "process/output"
EXITED = "process/exited"
CLOSED = "process/closed"

WireStream = Literal["stdout", "stderr", "pty"]

#: Integers as codex types them (serde): seqs, sizes and waits are u64, exit codes i32
#: (a process that failed may report -1). Distinct hooks so that neither side can send
#: what the other refuses (review observation 3). A plain ``int`` is u64.
U64 = Annotated[int, "u64"]
I32 = Annotated[int, "i32"]
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_U64_MAX = 2**64 - 1


@attrs.frozen
class InitializeParams:
    client_name: str
    resume_session_id: str | None = None


@attrs.frozen
class InitializeResult:
    session_id: str
    environment_info: dict[str, Any] | None = None
    # Our extensions (absent from codex): methods a client may use on top of 0.169.0.
    extensions: list[str] | None = None


@attrs.frozen
class StartParams:
    process_id: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    tty: bool
    pipe_stdin: bool = False
    arg0: str | None = None
    # Our extension (announced as START_TTY_SIZE): [rows, cols] of a new PTY.
    tty_size: list[int] | None = None


@attrs.frozen
class StartResult:
    process_id: str
    sandbox_type: str = "none"


@attrs.frozen
class ReadParams:
    process_id: str
    after_seq: U64 | None = None
    max_bytes: U64 | None = None
    wait_ms: U64 | None = None


@attrs.frozen
class ReadChunk:
    seq: U64
    stream: WireStream
    chunk: bytes


@attrs.frozen
class ReadResult:
    chunks: list[ReadChunk]
    next_seq: U64
    exited: bool
    exit_code: I32 | None
    closed: bool
    failure: str | None = None
    sandbox_denied: bool = False


@attrs.frozen
class WriteParams:
    process_id: str
    chunk: bytes
    write_id: str | None = None  # required by codex; we accept it missing


@attrs.frozen
class WriteResult:
    status: Literal["accepted", "unknownProcess", "stdinClosed", "starting"]


@attrs.frozen
class SignalParams:
    process_id: str
    signal: Literal["interrupt"]


@attrs.frozen
class TerminateParams:
    process_id: str


@attrs.frozen
class TerminateResult:
    running: bool


@attrs.frozen
class ResizeParams:
    process_id: str
    rows: int
    cols: int


@attrs.frozen
class CloseStdinParams:
    process_id: str


@attrs.frozen
class OutputParams:
    process_id: str
    seq: U64
    stream: WireStream
    chunk: bytes


@attrs.frozen
class ExitedParams:
    process_id: str
    seq: U64
    exit_code: I32
    sandbox_denied: bool = False


@attrs.frozen
class ClosedParams:
    process_id: str
    seq: U64


class ParamsError(ValueError):
    """Params that do not fit the method; the text is the -32602 message."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _strict(kind: type, expected: str) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise ParamsError(f"invalid type: boolean `{str(value).lower()}`, expected {expected}")
        if not isinstance(value, kind):
            raise ParamsError(f"invalid type: {_describe(value)}, expected {expected}")
        return value

    return hook


def _integer(name: str, low: int, high: int) -> Any:
    """A JSON integer in [low, high], with serde's wording when it is not."""

    def hook(value: Any, _type: Any) -> int:
        if isinstance(value, bool):
            raise ParamsError(f"invalid type: boolean `{str(value).lower()}`, expected {name}")
        if isinstance(value, float) or (isinstance(value, int) and not low <= value <= high):
            raise ParamsError("invalid number")  # codex's words for an out-of-range number
        if not isinstance(value, int):
            raise ParamsError(f"invalid type: {_describe(value)}, expected {name}")
        return value

    return hook


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int | float):
        return "number"  # codex (serde_json) does not quote the value
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


def _b64decode(value: Any, _type: Any) -> bytes:
    if type(value) is bytes:  # decoded already, by _jsonrpc.decode_frame (JSON has no bytes)
        return value
    if not isinstance(value, str):
        raise ParamsError(f"invalid type: {_describe(value)}, expected a base64 string")
    try:
        # msgspec's decoder is ~3.5x binascii's, and as strict (padding, alphabet).
        decoded: bytes = msgspec.convert(value, bytes)
    except (msgspec.ValidationError, UnicodeEncodeError):  # (a lone surrogate, say)
        pass
    else:
        return decoded
    try:  # refused: binascii's strict mode says why, in the words peers already see
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ParamsError(f"invalid base64: {exc}") from None


def _b64encode(value: bytes) -> str:
    return binascii.b2a_base64(value, newline=False).decode("ascii")


# Our extension fields: never put on the wire unless used, so codex never sees them.
_OMIT_IF_NONE = frozenset({"tty_size", "extensions", "resume_session_id"})


def _struct_hook(name: str, fn: Any) -> Any:
    def hook(value: Any, type_: Any) -> Any:
        if not isinstance(value, dict):
            raise ParamsError(f"invalid type: {_describe(value)}, expected struct {name}")
        return fn(value, type_)

    return hook


def _is_list(type_: Any) -> bool:
    origin: object = typing.get_origin(type_)
    return origin is list


def _is_literal(type_: Any) -> bool:
    origin: object = typing.get_origin(type_)
    return origin is typing.Literal


def _make_converter(*, raw_bytes: bool = False) -> cattrs.Converter:
    """The converter; with ``raw_bytes``, unstructuring leaves ``bytes`` as they are
    (``_jsonrpc.encode`` writes them as base64 itself, without a second pass)."""
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))
    u64 = _integer("u64", 0, _U64_MAX)
    conv.register_structure_hook(int, u64)
    conv.register_structure_hook_func(lambda t: t == U64, u64)
    conv.register_structure_hook_func(lambda t: t == I32, _integer("i32", _I32_MIN, _I32_MAX))
    conv.register_structure_hook(bytes, _b64decode)
    if not raw_bytes:
        conv.register_unstructure_hook(bytes, _b64encode)
    else:
        conv.register_unstructure_hook(bytes, lambda value: value)

    def dict_str_str(value: Any, _type: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ParamsError(f"invalid type: {_describe(value)}, expected a map")
        for key, val in value.items():
            if not isinstance(val, str):
                raise ParamsError(f"invalid type: {_describe(val)}, expected a string")
            del key
        return dict(value)

    def any_list(value: Any, type_: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ParamsError(f"invalid type: {_describe(value)}, expected a sequence")
        (item,) = typing.get_args(type_) or (Any,)
        return [conv.structure(v, item) for v in value]

    def any_map(value: Any, _type: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ParamsError(f"invalid type: {_describe(value)}, expected a map")
        return dict(value)

    def literal(value: Any, type_: Any) -> Any:
        allowed = typing.get_args(type_)
        if value in allowed and isinstance(value, str):
            return value
        if not isinstance(value, str):
            raise ParamsError(f"invalid type: {_describe(value)}, expected a string")
        names = ", ".join(f"`{a}`" for a in allowed)
        expected = names if len(allowed) == 1 else f"one of {names}"
        raise ParamsError(f"unknown variant `{value}`, expected {expected}")

    conv.register_structure_hook_func(_is_literal, literal)
    conv.register_structure_hook_func(lambda t: t == dict[str, str], dict_str_str)
    conv.register_structure_hook_func(_is_list, any_list)
    conv.register_structure_hook_func(lambda t: t == dict[str, Any], any_map)
    for cls in (
        InitializeParams, InitializeResult, StartParams, StartResult, ReadParams, ReadChunk,
        ReadResult, WriteParams, WriteResult, SignalParams, TerminateParams, TerminateResult,
        ResizeParams, CloseStdinParams, OutputParams, ExitedParams, ClosedParams,
    ):  # fmt: skip
        renames: dict[str, Any] = {
            a.name: override(rename=_camel(a.name), omit_if_default=a.name in _OMIT_IF_NONE)
            for a in attrs.fields(cls)
        }
        conv.register_structure_hook(
            cls,
            _struct_hook(
                cls.__name__,
                make_dict_structure_fn(cls, conv, _cattrs_detailed_validation=False, **renames),
            ),
        )
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **renames))
    return conv


_CONVERTER = _make_converter()
T = TypeVar("T")


@functools.cache
def _raw_converter() -> cattrs.Converter:
    """Built on first use (a server's first result): a client never pays for it."""
    return _make_converter(raw_bytes=True)


def structure(params: Any, cls: type[T]) -> T:
    """Wire params -> ``cls``; ParamsError with a serde-like message when they don't fit."""
    if params is None:
        raise ParamsError(f"invalid type: null, expected struct {cls.__name__}")
    if not isinstance(params, dict):
        raise ParamsError(f"invalid type: {_describe(params)}, expected struct {cls.__name__}")
    try:
        return _CONVERTER.structure(params, cls)
    except ParamsError:
        raise
    except KeyError as exc:
        raise ParamsError(f"missing field `{exc.args[0]}`") from None
    except (TypeError, ValueError, cattrs.errors.CattrsError) as exc:
        raise ParamsError(f"invalid params: {exc}") from None


def unstructure(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = _CONVERTER.unstructure(value)
    return out


def unstructure_raw(value: Any) -> dict[str, Any]:
    """As ``unstructure``, but ``bytes`` fields stay ``bytes``: for a message that is
    about to go through ``_jsonrpc.encode``, which writes them as base64 in one pass."""
    out: dict[str, Any] = _raw_converter().unstructure(value)
    return out


def output_params(process_id: str, seq: int, stream: str, chunk: bytes) -> dict[str, Any]:
    """``unstructure_raw(OutputParams(...))``, built directly: once per output chunk."""
    return {"processId": process_id, "seq": seq, "stream": stream, "chunk": chunk}
