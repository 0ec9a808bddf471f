"""The blocking front door's lifetimes (review defects 18, 20, and 4 via close()).

Each case runs in a fresh interpreter: what is under test is garbage collection,
fork and interpreter exit, which the test runner's own process would disturb.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

import unified_exec as ue
from unified_exec import sync

from .helpers import alive


def _run(script: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def test_a_dropped_manager_is_collected_and_terminates_its_children() -> None:
    """Review r12: the loop thread held the Manager, so its finalizer never ran."""
    out = _run(
        """
        import gc, threading, time, weakref
        from unified_exec import sync

        def start_and_drop():
            mgr = sync.Manager(allow_login_shell=False)
            out = mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=300)
            return weakref.ref(mgr), int(out.output.split()[0])

        ref, pid = start_and_drop()
        gc.collect()
        print("collected", ref() is None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            threads = [t for t in threading.enumerate() if t.name == "unified_exec.sync"]
            try:
                state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                state = "gone"
            if not threads and state in ("gone", "Z"):
                break
            time.sleep(0.05)
        print("threads", len(threads), "child", state)
        """
    )
    assert "collected True" in out
    assert "threads 0 child gone" in out


def test_a_forked_child_exits_normally_and_cannot_use_the_parents_manager() -> None:
    """Review n12: the child inherited the exit hook and blocked in it forever."""
    out = _run(
        """
        import os, sys, time
        from unified_exec import InvalidRequestError, sync

        mgr = sync.Manager(allow_login_shell=False)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                mgr.exec_command("true")
                os.write(w, b"call ran")
            except InvalidRequestError as exc:
                os.write(w, b"refused: " + str(exc).encode())
            mgr.close()      # a no-op here
            sys.exit(0)      # runs atexit hooks: must not hang
        os.close(w)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = "hung"
        print("child said:", os.read(r, 1000).decode())
        print("child status:", status)
        out = mgr.exec_command("echo parent-ok", yield_time_ms=5000)
        print("parent:", out.output.strip())
        mgr.close()
        """
    )
    assert "child status: 0" in out, out
    assert "child said: refused: this Manager belongs to process" in out
    assert "parent: parent-ok" in out


def test_interpreter_exit_without_close_terminates_the_children() -> None:
    out = _run(
        """
        from unified_exec import sync
        mgr = sync.Manager(allow_login_shell=False)
        out = mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=300)
        print(out.output.split()[0], flush=True)
        """
    )
    assert _wait_gone(int(out.split()[0]))


def test_close_is_idempotent_and_later_calls_are_typed_errors() -> None:
    mgr = sync.Manager(allow_login_shell=False)
    out = mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=300)
    pid = int(out.output.split()[0])
    assert mgr.session_ids == [out.session_id]
    mgr.close()
    mgr.close()
    assert _wait_gone(pid)
    with pytest.raises(ue.InvalidRequestError, match="closed"):
        mgr.exec_command("true")
    with pytest.raises(ue.InvalidRequestError, match="closed"):
        _ = mgr.session_ids


def test_a_backend_that_fails_to_close_does_not_make_close_raise() -> None:
    """Fault injection (no real backend fails its aclose on demand)."""

    class FailsToClose(ue.LocalPtyBackend):
        async def aclose(self) -> None:
            await super().aclose()
            raise RuntimeError("aclose blew up")

    mgr = sync.Manager(FailsToClose, allow_login_shell=False)
    out = mgr.exec_command("echo $$; exec sleep 30", yield_time_ms=300)
    mgr.close()  # logged, not raised
    assert _wait_gone(int(out.output.split()[0]))


def test_a_factory_error_reaches_the_constructor() -> None:
    def broken() -> ue.LocalPtyBackend:
        raise ue.LaunchError("no backend today")

    before = {t for t in threading.enumerate() if t.name == "unified_exec.sync"}
    with pytest.raises(ue.LaunchError, match="no backend today"):
        sync.Manager(broken)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = {t for t in threading.enumerate() if t.name == "unified_exec.sync"} - before
        if not left:
            break
        time.sleep(0.02)
    assert not left  # no loop thread was left behind


def test_terminate_all_returns_each_sessions_state() -> None:
    with sync.Manager(allow_login_shell=False) as mgr:
        out = mgr.exec_command("trap 'exit 9' TERM; sleep 30 & wait", yield_time_ms=300)
        assert out.session_id is not None
        states = mgr.terminate_all()
        assert mgr.session_ids == []
    assert states[out.session_id].exit_code == 9
