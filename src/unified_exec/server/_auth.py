"""Who may open a websocket to the exec-server: bearer capability tokens, the codex way.

The server runs arbitrary commands as its own user, and loopback is shared by every
local user (and every container in the same network namespace), so on loopback a
token is the only thing standing between another user and a shell. The rules follow
codex's ``exec-server --ws-auth capability-token``:

- the token comes from a file (``--ws-token-file``; the trailing newline is stripped)
  or only its SHA-256 is known (``--ws-token-sha256 HEX``), never from argv;
- the client sends ``Authorization: Bearer <token>`` on the upgrade request; the
  scheme is case-insensitive, surrounding blanks are ignored;
- the check compares SHA-256 digests with ``hmac.compare_digest``: constant time in
  the presented token's content, and the same code for both ways of configuring it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile

import attrs

from .._errors import InvalidRequestError

__all__ = ["TokenAuth", "generate_token_file", "read_token_file"]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@attrs.frozen(repr=False)
class TokenAuth:
    """Checks ``Authorization`` headers against one capability token's SHA-256.

    Only the digest is kept, so the token itself never sits in this object's repr,
    in a traceback's locals, or in a core dump of a ``--ws-token-sha256`` server.
    """

    digest: bytes

    def __repr__(self) -> str:
        return "TokenAuth(<sha256 hidden>)"

    @classmethod
    def from_token(cls, token: str) -> TokenAuth:
        if not token:
            raise InvalidRequestError("the websocket token must not be empty")
        if token != token.strip() or any(ch in token for ch in "\r\n\0"):
            raise InvalidRequestError(
                "the websocket token must not contain blanks at its ends, CR, LF or NUL"
            )
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidRequestError("the websocket token must be ASCII") from None
        return cls(hashlib.sha256(raw).digest())

    @classmethod
    def from_sha256(cls, hexdigest: str) -> TokenAuth:
        if not _HEX64.fullmatch(hexdigest):
            raise InvalidRequestError("--ws-token-sha256 must be a 64-character hex SHA-256 digest")
        return cls(bytes.fromhex(hexdigest))

    def check(self, authorization: bytes | None) -> bool:
        """True if the header is ``Bearer <the token>``; False if missing or wrong."""
        if authorization is None:
            presented = b""
        else:
            scheme, _, rest = authorization.strip().partition(b" ")
            presented = rest.strip() if scheme.lower() == b"bearer" else b""
        # Hash first, so the comparison runs over 32 bytes whatever was presented.
        given = hashlib.sha256(presented).digest()
        ok = hmac.compare_digest(given, self.digest)
        return ok and bool(presented)


def read_token_file(path: str) -> TokenAuth:
    """The token in ``path``, its one trailing newline (LF or CRLF) stripped, as codex."""
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except OSError as exc:
        raise InvalidRequestError(f"cannot read --ws-token-file {path}: {exc.strerror}") from None
    if len(data) > 64 * 1024:
        raise InvalidRequestError(f"--ws-token-file {path} is too large to be a token")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    try:
        token = data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"--ws-token-file {path} does not hold an ASCII token") from None
    if not token:
        raise InvalidRequestError(f"--ws-token-file {path} is empty")
    return TokenAuth.from_token(token)


def generate_token_file(directory: str | None = None) -> tuple[str, str]:
    """Make a fresh random token and write it to a new 0600 file; (token, path).

    The file lives in a fresh 0700 directory (``$XDG_RUNTIME_DIR`` when set, else the
    temp dir), created with ``O_EXCL`` under that directory, so no other user can
    read it, swap it, or have planted it first.
    """
    token = secrets.token_urlsafe(32)
    base = directory or os.environ.get("XDG_RUNTIME_DIR") or None
    if base is not None and not os.path.isdir(base):
        base = None
    folder = tempfile.mkdtemp(prefix="unified-exec-", dir=base)  # mode 0700
    path = os.path.join(folder, "token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    return token, path
