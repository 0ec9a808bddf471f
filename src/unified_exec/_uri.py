"""The one file-URI codec: codex sends and expects `file://` URIs for paths on the wire.

Both the client (cwd it sends) and the server (cwd/home/tmp it announces) go through here,
so a path with spaces, `%`, `#` or non-ASCII survives a round trip.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

__all__ = ["file_uri", "uri_path"]


def file_uri(path: str) -> str:
    """`/a b/c` -> `file:///a%20b/c` (percent-encoded, as RFC 8089 wants)."""
    return "file://" + quote(path, safe="/")


def uri_path(uri: str) -> str | None:
    """`file:///a%20b/c` -> `/a b/c`; None for anything that is not a file URI."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    return unquote(parts.path, errors="surrogateescape")
