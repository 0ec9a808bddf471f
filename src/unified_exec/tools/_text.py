"""Codex's model-visible text arithmetic: token estimates, middle truncation and the
head/tail buffer. Pure; the numbers must match Codex byte for byte."""

from __future__ import annotations

import math

__all__ = [
    "HeadTailBuffer",
    "approx_token_count",
    "formatted_truncate_text",
    "omission_marker",
    "rust_line_count",
    "truncate_middle_with_token_budget",
]


def approx_token_count(nbytes: int) -> int:
    """Codex's estimate: one token per 4 bytes, rounded up."""
    return math.ceil(nbytes / 4)


def rust_line_count(text: str) -> int:
    """``str::lines().count()``: split on \\n, a trailing newline adds no line."""
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def _is_boundary(data: bytes, i: int) -> bool:
    return i >= len(data) or (data[i] & 0xC0) != 0x80


def truncate_middle_with_token_budget(text: str, max_tokens: int) -> str:
    """Keep the head and tail that fit ``max_tokens``*4 bytes, on char boundaries."""
    data = text.encode()
    max_bytes = max_tokens * 4
    if len(data) <= max_bytes:
        return text
    left = max_bytes // 2
    right = max_bytes - left
    head_end = left
    while head_end > 0 and not _is_boundary(data, head_end):
        head_end -= 1
    tail_start = len(data) - right
    while tail_start < len(data) and not _is_boundary(data, tail_start):
        tail_start += 1
    removed = approx_token_count(len(data) - max_bytes)
    head = data[:head_end].decode()
    tail = data[tail_start:].decode()
    return f"{head}\u2026{removed} tokens truncated\u2026{tail}"


def formatted_truncate_text(text: str, max_tokens: int) -> str:
    if len(text.encode()) <= max_tokens * 4:
        return text
    lines = rust_line_count(text)
    return f"Total output lines: {lines}\n\n" + truncate_middle_with_token_budget(text, max_tokens)


def omission_marker(nbytes: int) -> bytes:
    return f"\n... {nbytes} bytes omitted ...\n".encode()


class HeadTailBuffer:
    """Keeps the first and last ``max_bytes/2`` bytes of a stream, counting what it drops."""

    def __init__(self, max_bytes: int = 1024 * 1024) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.head_budget = max_bytes // 2
        self.tail_budget = max_bytes - self.head_budget
        self._reset()

    def _reset(self) -> None:
        self._head = bytearray()
        self._tail = bytearray()
        self.omitted = 0

    @property
    def retained(self) -> int:
        return len(self._head) + len(self._tail)

    def push(self, chunk: bytes) -> None:
        if self.max_bytes == 0:
            self.omitted += len(chunk)
            return
        room = self.head_budget - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        if len(chunk) >= self.tail_budget:
            self.omitted += len(self._tail) + len(chunk) - self.tail_budget
            self._tail = bytearray(chunk[len(chunk) - self.tail_budget :])
            return
        self._tail += chunk
        excess = len(self._tail) - self.tail_budget
        if excess > 0:
            del self._tail[:excess]
            self.omitted += excess

    def snapshot(self) -> list[bytes]:
        return [bytes(part) for part in (self._head, self._tail) if part]

    def to_bytes(self) -> bytes:
        return bytes(self._head + self._tail)

    def to_bytes_with_omission_marker(self) -> bytes:
        if not self.omitted:
            return self.to_bytes()
        return bytes(self._head) + omission_marker(self.omitted) + bytes(self._tail)

    def drain(self) -> tuple[bytes, int, bytes]:
        """(head, omitted, tail), and start afresh."""
        out = (bytes(self._head), self.omitted, bytes(self._tail))
        self._reset()
        return out
