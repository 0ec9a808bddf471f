"""unified_exec: start processes, feed them, read them and learn how they ended —
the same way on a local PTY, on pipes, or behind an exec-server."""

from ._errors import ExecTimeoutError as ExecTimeoutError
from ._errors import InvalidRequestError as InvalidRequestError
from ._errors import LaunchError as LaunchError
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProcessUnknownError as ProcessUnknownError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._errors import RpcError as RpcError
from ._errors import StdinClosedError as StdinClosedError
from ._errors import TransportLostError as TransportLostError
from ._errors import UnifiedExecError as UnifiedExecError
from ._events import ClosedEvent as ClosedEvent
from ._events import ExitedEvent as ExitedEvent
from ._events import FailedEvent as FailedEvent
from ._events import LostEvent as LostEvent
from ._events import OutputEvent as OutputEvent
from ._events import ProcessEvent as ProcessEvent
from ._events import Stream as Stream
from ._events import WriteStatus as WriteStatus
from ._log import EvictedSeqs as EvictedSeqs
from ._process import DEFAULT_RETENTION_BYTES as DEFAULT_RETENTION_BYTES
from ._process import EventStream as EventStream
from ._process import ReadResult as ReadResult
from ._process import UnifiedExecProcess as UnifiedExecProcess
from ._process import open_process as open_process
from ._request import ExecRequest as ExecRequest
from ._request import FrozenEnv as FrozenEnv
from ._state import ProcessState as ProcessState
from ._version import __version__ as __version__
from .backends import REMOTE_DEFAULT_ENV as REMOTE_DEFAULT_ENV
from .backends import BackendDescription as BackendDescription
from .backends import Capability as Capability
from .backends import DirectoryEntry as DirectoryEntry
from .backends import DnsDiscovery as DnsDiscovery
from .backends import EnvironmentStatus as EnvironmentStatus
from .backends import ExecBackend as ExecBackend
from .backends import FileMetadata as FileMetadata
from .backends import LocalPtyBackend as LocalPtyBackend
from .backends import Location as Location
from .backends import PoolBackend as PoolBackend
from .backends import ProcessHandle as ProcessHandle
from .backends import RemoteExecBackend as RemoteExecBackend
from .backends import RemoteFileError as RemoteFileError
from .backends import RemoteFileNotFoundError as RemoteFileNotFoundError
from .backends import ServerState as ServerState
from .backends import capabilities_of as capabilities_of
from .backends import describe_backend as describe_backend
from .backends.remote import LinkSettings as LinkSettings
from .server import ExecServer as ExecServer
from .server import Limits as Limits
from .server import open_exec_server as open_exec_server
from .server import serve_exec_server as serve_exec_server

__all__ = [
    "DEFAULT_RETENTION_BYTES",
    "REMOTE_DEFAULT_ENV",
    "ExecServer",
    "Limits",
    "LinkSettings",
    "RemoteExecBackend",
    "PoolBackend",
    "DnsDiscovery",
    "ServerState",
    "EnvironmentStatus",
    "FileMetadata",
    "DirectoryEntry",
    "RemoteFileError",
    "RemoteFileNotFoundError",
    "open_exec_server",
    "serve_exec_server",
    "BackendDescription",
    "Capability",
    "EvictedSeqs",
    "FrozenEnv",
    "capabilities_of",
    "describe_backend",
    "ClosedEvent",
    "EventStream",
    "ExecBackend",
    "ExecRequest",
    "ExecTimeoutError",
    "ExitedEvent",
    "FailedEvent",
    "InvalidRequestError",
    "LaunchError",
    "LocalProtocolError",
    "LocalPtyBackend",
    "Location",
    "LostEvent",
    "OutputEvent",
    "ProcessEvent",
    "ProcessHandle",
    "ProcessState",
    "ProcessUnknownError",
    "ProtocolError",
    "ReadResult",
    "RemoteProtocolError",
    "RpcError",
    "StdinClosedError",
    "Stream",
    "TransportLostError",
    "UnifiedExecError",
    "UnifiedExecProcess",
    "WriteStatus",
    "open_process",
]
