"""The agent tool layer: Codex's exec_command / write_stdin over any backend."""

from ._env import UNIFIED_EXEC_ENV as UNIFIED_EXEC_ENV
from ._env import apply_unified_exec_env as apply_unified_exec_env
from ._manager import UnifiedExecManager as UnifiedExecManager
from ._manager import clamp_yield_time as clamp_yield_time
from ._manager import open_manager as open_manager
from ._manager import session_to_prune as session_to_prune
from ._output import ExecCommandOutput as ExecCommandOutput
from ._specs import tool_specs as tool_specs
from ._text import HeadTailBuffer as HeadTailBuffer
from ._text import formatted_truncate_text as formatted_truncate_text
from ._text import truncate_middle_with_token_budget as truncate_middle_with_token_budget

__all__ = [
    "UNIFIED_EXEC_ENV",
    "ExecCommandOutput",
    "HeadTailBuffer",
    "UnifiedExecManager",
    "apply_unified_exec_env",
    "clamp_yield_time",
    "formatted_truncate_text",
    "open_manager",
    "session_to_prune",
    "tool_specs",
    "truncate_middle_with_token_budget",
]
