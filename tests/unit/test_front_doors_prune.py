"""Codex's pruning policy for every store size (review defect 21): with
``protected = min(8, max_sessions - 1)`` a full store always yields a victim, never
one of the protected most recent, and an exited one when any is eligible."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unified_exec.tools import session_to_prune


@st.composite
def full_stores(draw: st.DrawFn) -> tuple[int, list[tuple[int, float, bool]]]:
    max_sessions = draw(st.integers(1, 20))
    n = draw(st.integers(max_sessions, max_sessions + 3))
    times = draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n, unique=True))
    exited = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return max_sessions, [
        (1000 + i, t, e) for i, (t, e) in enumerate(zip(times, exited, strict=True))
    ]


@given(full_stores())
def test_a_full_store_always_has_a_victim_outside_the_protected(
    store: tuple[int, list[tuple[int, float, bool]]],
) -> None:
    max_sessions, meta = store
    protected = min(8, max_sessions - 1)
    victim = session_to_prune(meta, protected=protected)
    assert victim is not None
    newest = {m[0] for m in sorted(meta, key=lambda m: m[1], reverse=True)[:protected]}
    assert victim not in newest
    eligible = [m for m in meta if m[0] not in newest]
    by_id = {m[0]: m for m in meta}
    if any(exited for _, _, exited in eligible):
        assert by_id[victim][2]  # an exited one goes first
        assert by_id[victim][1] == min(t for _, t, e in eligible if e)
    else:
        assert by_id[victim][1] == min(t for _, t, _ in eligible)


def test_the_default_still_protects_eight() -> None:
    meta = [(i, float(i), False) for i in range(8)]
    assert session_to_prune(meta) is None
    assert session_to_prune(meta, protected=7) == 0
