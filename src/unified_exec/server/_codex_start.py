"""`process/start` with codex's `envPolicy` and `sandbox` semantics, around our handler.

Our ``Methods.start`` takes ``env`` as the whole environment and knows nothing of
sandboxes. codex sends ``envPolicy`` (inherit the server's environment minus excludes,
``env`` on top) and, in a read-only or workspace-write turn, a sandbox policy.
:func:`codex_start` wraps the handler so that, before anything runs:

- ``env`` is replaced by the environment ``envPolicy`` builds (`_envpolicy`);
- a start whose sandbox restricts something runs under bubblewrap (`_bwrap`) when the
  server's backend starts children on this host and ``bwrap`` works here, answered
  ``sandboxType: "linuxSeccomp"``; otherwise it is refused (-32600, a text that says
  why and what to do), so a restricted turn never runs a command with more rights
  than codex granted it. A start that asks for an ``arg0`` cannot be sandboxed (the
  system bwrap cannot set it) and is refused as well.

Wiring: ``self.table.update(codex_methods(self))`` at the end of ``Methods.__init__``
(this wrapped start, the `fs/*` methods of `_fs` and `fs/watchMissing` of `_fswatch`),
and ``environmentInfo`` through `_envinfo.codex_environment`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import attrs
import trio

from .._protocol._limits import Limits
from .._protocol._messages import ParamsError
from .._uri import uri_path
from ._bwrap import SANDBOX_TYPE, bwrap_argv, bwrap_path
from ._envpolicy import child_env
from ._fs import fs_methods
from ._fswatch import watch_methods
from ._sandbox import no_sandbox_refusal, process_needs

if TYPE_CHECKING:
    from ._conn import ConnState
    from ._session import Session

__all__ = ["codex_methods", "codex_start"]

S = TypeVar("S")
C = TypeVar("C")
Handler = Callable[[C, S, Any], Awaitable[Any]]


def _with_env(params: dict[str, Any]) -> dict[str, Any]:
    env = params.get("env")
    if params.get("envPolicy") is None or not isinstance(env, dict):
        return params  # the handler validates what is left
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        return params
    return {**params, "env": child_env(params, env)}


def _sandboxed_type(result: Any) -> Any:
    if attrs.has(type(result)) and hasattr(result, "sandbox_type"):
        return attrs.evolve(result, sandbox_type=SANDBOX_TYPE)
    if isinstance(result, dict):
        return {**result, "sandboxType": SANDBOX_TYPE}
    return result


def codex_start(
    handler: Handler[C, S], local: bool, bwrap: Callable[[], str | None] = bwrap_path
) -> Handler[C, S]:
    """Wrap a ``process/start`` handler; ``local``: the backend starts children on
    this host (only then can bwrap sandbox them); ``bwrap`` finds a working bwrap."""

    async def start(state: C, session: S, params: Any) -> Any:
        needs = process_needs(params)  # raises Fail for what nothing here can enforce
        if not isinstance(params, dict):
            return await handler(state, session, params)
        params = _with_env(params)
        if needs is None:
            return await handler(state, session, params)
        if not local:
            raise no_sandbox_refusal(needs, "serves a backend that does not run on this host")
        found = await trio.to_thread.run_sync(bwrap)
        if found is None:
            raise no_sandbox_refusal(needs, "found no working bubblewrap (`bwrap`)")
        if params.get("arg0") is not None:
            raise no_sandbox_refusal(needs, "cannot set arg0 under bubblewrap")
        cwd = params.get("cwd")
        cwd_path = (cwd if cwd.startswith("/") else uri_path(cwd)) if isinstance(cwd, str) else None
        argv = params.get("argv")
        if not cwd_path or not isinstance(argv, list) or not argv:
            raise ParamsError("a sandboxed process/start needs a file URI cwd and an argv")
        prefix = bwrap_argv(found, needs.fs, needs.network_enabled, cwd_path)
        if prefix is None:
            raise no_sandbox_refusal(needs, "cannot express this policy (a glob deny) as mounts")
        result = await handler(state, session, {**params, "argv": [*prefix, *argv]})
        return _sandboxed_type(result)

    return start


class _Server(Protocol):
    @property
    def limits(self) -> Limits: ...

    @property
    def backend(self) -> object: ...


class _Methods(Protocol):
    @property
    def server(self) -> _Server: ...

    async def start(self, state: ConnState, session: Session, params: Any) -> Any: ...


Lane = Literal["ordered", "control", "free"]


def codex_methods(methods: _Methods) -> dict[str, tuple[Any, Lane]]:
    """What codex's client needs beyond the process methods, for ``Methods.table``:
    ``process/start`` with envPolicy and sandboxes (sandboxed under bwrap only when the
    server's backend describes itself as local, whose children run on this host), the
    `fs/*` methods and `fs/watchMissing`."""
    from ..backends._description import Location, describe_backend

    local = describe_backend(methods.server.backend).location is Location.LOCAL
    table: dict[str, tuple[Any, Lane]] = {
        "process/start": (codex_start(methods.start, local=local), "ordered"),
    }
    table.update(fs_methods(methods.server))
    table.update(watch_methods())
    return table
