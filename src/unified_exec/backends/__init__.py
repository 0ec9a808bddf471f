"""Backends: the ExecBackend / ProcessHandle seam and the implementations we ship."""

from ._base import Capability as Capability
from ._base import ExecBackend as ExecBackend
from ._base import ProcessHandle as ProcessHandle
from ._base import capabilities_of as capabilities_of
from .local import LocalPtyBackend as LocalPtyBackend
from .pool import DnsDiscovery as DnsDiscovery
from .pool import PoolBackend as PoolBackend
from .pool import ServerState as ServerState
from .remote import REMOTE_DEFAULT_ENV as REMOTE_DEFAULT_ENV
from .remote import RemoteExecBackend as RemoteExecBackend

__all__ = [
    "REMOTE_DEFAULT_ENV",
    "Capability",
    "DnsDiscovery",
    "ExecBackend",
    "LocalPtyBackend",
    "PoolBackend",
    "ProcessHandle",
    "RemoteExecBackend",
    "ServerState",
    "capabilities_of",
]
