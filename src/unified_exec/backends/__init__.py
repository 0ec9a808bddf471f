"""Backends: the ExecBackend / ProcessHandle seam and the implementations we ship."""

from ._base import Capability as Capability
from ._base import ExecBackend as ExecBackend
from ._base import ProcessHandle as ProcessHandle
from ._base import capabilities_of as capabilities_of
from ._description import BackendDescription as BackendDescription
from ._description import Location as Location
from ._description import describe_backend as describe_backend
from ._remote_description import EnvironmentStatus as EnvironmentStatus
from ._remote_fs import DirectoryEntry as DirectoryEntry
from ._remote_fs import FileMetadata as FileMetadata
from ._remote_fs import RemoteFileError as RemoteFileError
from ._remote_fs import RemoteFileNotFoundError as RemoteFileNotFoundError
from .local import LocalPtyBackend as LocalPtyBackend
from .pool import DnsDiscovery as DnsDiscovery
from .pool import PoolBackend as PoolBackend
from .pool import ServerState as ServerState
from .remote import REMOTE_DEFAULT_ENV as REMOTE_DEFAULT_ENV
from .remote import RemoteExecBackend as RemoteExecBackend

__all__ = [
    "REMOTE_DEFAULT_ENV",
    "BackendDescription",
    "Capability",
    "DirectoryEntry",
    "DnsDiscovery",
    "EnvironmentStatus",
    "ExecBackend",
    "FileMetadata",
    "LocalPtyBackend",
    "Location",
    "PoolBackend",
    "ProcessHandle",
    "RemoteExecBackend",
    "RemoteFileError",
    "RemoteFileNotFoundError",
    "ServerState",
    "capabilities_of",
    "describe_backend",
]
