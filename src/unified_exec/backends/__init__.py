"""Backends: the ExecBackend / ProcessHandle seam and the implementations we ship."""

from ._base import ExecBackend as ExecBackend
from ._base import ProcessHandle as ProcessHandle
from .local import LocalPtyBackend as LocalPtyBackend

__all__ = ["ExecBackend", "LocalPtyBackend", "ProcessHandle"]
