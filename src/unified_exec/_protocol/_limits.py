"""Wire limits shared by our client and our server (sans-IO: no trio here).

One value, checked where frames are *built* as well as where they are received, so that
neither side can send what the other refuses (review observation 4). The defaults stay
under what codex 0.169-0.171 enforces (#33013: at most 256K JSON values per message).
"""

from __future__ import annotations

import attrs

from .._errors import InvalidRequestError

__all__ = ["DEFAULT_LIMITS", "Limits"]


def _positive(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{attr.name} must be a positive integer, got {value!r}")


@attrs.frozen
class Limits:
    """Bounds on what one peer may make the other hold.

    - `max_message_bytes`: one JSON-RPC message (a websocket frame or an ndjson line).
    - `max_write_chunk`: the largest stdin payload sent in one `process/write`; a bigger
      write is split into several frames (each with its own writeId). Base64 grows it by
      4/3, so this stays well under `max_message_bytes`.
    - `max_read_bytes`: the default `maxBytes` a server applies to one `process/read`, so a
      read result always fits a message.
    - `max_json_values`: JSON values (scalars, arrays, objects) in one message (codex: 256K).
    - `max_read_chunks`: chunks in one `process/read` result (codex #33013: 50,000), which
      also keeps a read of many tiny chunks under `max_json_values`.
    - `max_in_flight`: requests of one connection the server works on at once. Past it the
      server stops reading that connection until one is answered (backpressure: a peer
      that pipelines requests and never reads the answers holds a bounded amount).
    - `max_processes_per_connection` / `max_processes`: live processes per session / server.
    - `max_write_ids` / `max_write_id_bytes`: writeIds a server remembers per process (to
      de-duplicate replays after a resume), and the longest writeId it accepts.
    - `max_fs_file_bytes`: the largest file `fs/readFile` returns or `fs/writeFile` takes
      (really `fs_file_budget`: also what fits one message once base64 grows it).
    - `max_fs_dir_entries`: entries in one `fs/readDirectory` result (codex: 50,000).
    """

    max_message_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    max_write_chunk: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    max_read_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    max_json_values: int = attrs.field(default=256 * 1024, validator=_positive)
    max_read_chunks: int = attrs.field(default=50_000, validator=_positive)
    max_in_flight: int = attrs.field(default=128, validator=_positive)
    max_processes_per_connection: int = attrs.field(default=1024, validator=_positive)
    max_processes: int = attrs.field(default=4096, validator=_positive)
    max_write_ids: int = attrs.field(default=4096, validator=_positive)
    max_write_id_bytes: int = attrs.field(default=256, validator=_positive)
    max_fs_file_bytes: int = attrs.field(default=32 * 1024 * 1024, validator=_positive)
    max_fs_dir_entries: int = attrs.field(default=50_000, validator=_positive)

    @property
    def read_budget(self) -> int:
        """The `maxBytes` a server really applies: `max_read_bytes`, but never more than a
        quarter of a message. A read may cross its budget by one chunk (it always returns
        at least one), and base64 takes 4/3: with chunks no bigger than the budget the
        result still fits. (`max_message_bytes` must allow a backend's largest output
        chunk in any case, 256 KiB for LocalPtyBackend, or that chunk cannot be sent.)"""
        return min(self.max_read_bytes, self.max_message_bytes // 4)

    @property
    def fs_file_budget(self) -> int:
        """The largest file content `fs/*` moves in one message: `max_fs_file_bytes`,
        but never more than what fits `max_message_bytes` once base64 (4/3) and the
        JSON around it (4 KiB) are added."""
        return max(1, min(self.max_fs_file_bytes, (self.max_message_bytes - 4096) * 3 // 4))


DEFAULT_LIMITS = Limits()
