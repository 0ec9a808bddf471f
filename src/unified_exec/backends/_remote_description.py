"""What an exec-server says about itself, as a ``BackendDescription``.

The server tells once, in its ``initialize`` answer: ``environmentInfo`` (codex's
shape: ``cwd``/``userHomeDir`` as file URIs, ``shell{name, path}``, ``platformOs``)
and our ``extensions`` list. Handles can interrupt on every server (``process/signal``
is in the base protocol); resize and close-stdin only where the server announces
``process/resize`` / ``process/closeStdin`` (ours does, codex 0.169-0.171 does not).

A field the server leaves out, or sends in a shape we do not know, is ``None``:
"not known", never a guess from this machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._protocol import _messages as m
from .._uri import uri_path
from ._description import BASELINE_ENV, BackendDescription, Capability, Location

__all__ = ["EnvironmentStatus", "describe_pool", "describe_remote", "remote_capabilities"]


def remote_capabilities(extensions: Iterable[str]) -> frozenset[Capability]:
    """What a handle can do on a server announcing ``extensions``."""
    announced = frozenset(extensions)
    caps = {Capability.INTERRUPT}
    if m.PROCESS_RESIZE in announced:
        caps.add(Capability.RESIZE)
    if m.PROCESS_CLOSE_STDIN in announced:
        caps.add(Capability.CLOSE_STDIN)
    return frozenset(caps)


def _path(info: Mapping[str, Any], key: str) -> str | None:
    value = info.get(key)
    if not isinstance(value, str):
        return None
    path = value if value.startswith("/") else uri_path(value)
    # A path we could never pass back (NUL, not absolute) is "not known", not an error:
    # a peer's odd answer must not stop a manager from opening.
    return path if path and path.startswith("/") and "\0" not in path else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value and "\0" not in value else None


def describe_remote(info: Mapping[str, Any], extensions: Iterable[str]) -> BackendDescription:
    """The description of a server from its ``environmentInfo`` and ``extensions``."""
    home = _path(info, "userHomeDir")
    shell = info.get("shell")
    shell_path = _text(shell.get("path")) if isinstance(shell, Mapping) else None
    env = dict(BASELINE_ENV)
    if home is not None:
        env["HOME"] = home
    return BackendDescription(
        location=Location.REMOTE,
        cwd=_path(info, "cwd"),
        home=home,
        shell=shell_path,
        platform=_text(info.get("platformOs")),
        default_env=env,
        capabilities=remote_capabilities(extensions),
    )


def _agreed(values: list[Any]) -> Any:
    """The one value every member has, else None (members disagree, or none is known)."""
    first = values[0] if values else None
    return first if all(v == first for v in values) else None


def describe_pool(
    members: list[BackendDescription], *, complete: bool = True
) -> BackendDescription:
    """A pool: what its connected members agree on; handles can do what all can do.

    A process may land on any member, so only a fact true of every one of them is a
    fact about "where the pool runs it"; capabilities are the intersection.
    ``complete`` False: some member is not connected (yet), so nothing can be said to
    hold on every member but the capabilities of those known.
    """
    if not members:
        return BackendDescription(location=Location.POOL)
    if not complete:
        return BackendDescription(
            location=Location.POOL,
            capabilities=frozenset.intersection(*(d.capabilities for d in members)),
        )
    env = _agreed([dict(d.default_env) for d in members])
    caps = frozenset.intersection(*(d.capabilities for d in members))
    return BackendDescription(
        location=Location.POOL,
        cwd=_agreed([d.cwd for d in members]),
        home=_agreed([d.home for d in members]),
        shell=_agreed([d.shell for d in members]),
        platform=_agreed([d.platform for d in members]),
        default_env=env if env is not None else BASELINE_ENV,
        capabilities=caps,
    )


@attrs.frozen
class EnvironmentStatus:
    """An exec-server's answer to ``environment/status`` (codex's health call).

    ``status`` is the server's word: ``"ready"`` from ours and codex 0.169-0.171;
    ``latency`` the seconds the answer took (the request's round trip).
    """

    status: str
    latency: float

    @property
    def ready(self) -> bool:
        return self.status == "ready"
