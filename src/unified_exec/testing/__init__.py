"""Tools for testing backends: one conformance suite every ExecBackend must pass."""

from ._conformance import CHECKS as CHECKS
from ._conformance import BackendFactory as BackendFactory
from ._conformance import check_backend as check_backend

__all__ = ["CHECKS", "BackendFactory", "check_backend"]
