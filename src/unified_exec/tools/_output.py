"""ExecCommandOutput: what one exec_command / write_stdin call returns."""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["EndReason", "ExecCommandOutput"]

#: Why the call stopped waiting: the process finished, the yield window ran out, or
#: (opt-in) output went quiet.
EndReason = Literal["exit", "deadline", "quiet"]


@attrs.frozen
class ExecCommandOutput:
    """One call's result. ``to_text()`` is exactly what Codex shows the model."""

    chunk_id: str
    wall_time: float
    exit_code: int | None
    session_id: int | None
    original_token_count: int
    output: str = attrs.field(repr=lambda s: f"<{len(s)} chars>")
    raw_output: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    omitted_bytes: int = 0
    ended_by: EndReason = "deadline"
    warnings: tuple[str, ...] = ()

    def to_text(self) -> str:
        lines = []
        if self.chunk_id:
            lines.append(f"Chunk ID: {self.chunk_id}")
        lines.append(f"Wall time: {self.wall_time:.4f} seconds")
        if self.exit_code is not None:
            lines.append(f"Process exited with code {self.exit_code}")
        if self.session_id is not None:
            lines.append(f"Process running with session ID {self.session_id}")
        lines.append(f"Original token count: {self.original_token_count}")
        lines.append("Output:")
        lines.append(self.output)
        return "\n".join(lines)
