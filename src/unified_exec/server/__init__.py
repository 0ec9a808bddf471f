"""Our exec-server: serve any ExecBackend with the codex exec-server protocol."""

from ._server import ExecServer as ExecServer
from ._transports import serve_exec_server as serve_exec_server

__all__ = ["ExecServer", "serve_exec_server"]
