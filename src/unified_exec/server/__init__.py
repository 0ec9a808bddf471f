"""Our exec-server: serve any ExecBackend with the codex exec-server protocol."""

from .._protocol._limits import Limits as Limits
from ._server import ExecServer as ExecServer
from ._server import open_exec_server as open_exec_server
from ._transports import serve_exec_server as serve_exec_server

__all__ = ["ExecServer", "Limits", "open_exec_server", "serve_exec_server"]
