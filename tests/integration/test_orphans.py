"""No orphans when the owner dies without cleaning up (review #33, issue 7 §3).

A separate Python process owns LocalPtyBackend children: a background job
(``sleep 1000 & sleep 1000``), a setsid escapee (``setsid sleep 1000``) and a tty
session. Each child's environment carries a marker unique to the test; after the
owner is killed (SIGKILL: none of its own cleanup runs; SIGTERM: Python's default,
which runs none either), a scan of /proc/*/environ must soon find no process with
the marker. The warden is what kills them; these tests fail without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from .._support import marked_pids

_BOUND = 15.0  # generous: the machine is shared; the warden needs ~0.1 s
_CHILDREN = (
    (["sh", "-c", "sleep 1000 & sleep 1000"], False),
    (["sh", "-c", "setsid sleep 1000 & wait"], False),
    (["sh", "-c", "sleep 1000 & sleep 1000"], True),
)
_EXPECTED = 8  # sh + 2 sleeps, sh + the setsid'd sleep, sh + 2 sleeps on the tty

_OWNER = textwrap.dedent(
    """
    import json, os, sys, trio
    import unified_exec as ue

    async def main():
        mark = sys.argv[1]
        children = json.loads(sys.argv[2])
        backend = ue.LocalPtyBackend(warden=sys.argv[3] == "on")
        env = dict(os.environ, UE_ORPHAN_MARK=mark)
        procs = [
            await ue.UnifiedExecProcess.start(backend, ue.ExecRequest(argv, env=env, tty=tty))
            for argv, tty in children
        ]
        print("started", len(procs), flush=True)
        await trio.sleep(1000)

    trio.run(main)
    """
)


def marked(mark: str) -> list[int]:
    """Live processes whose environment has UE_ORPHAN_MARK=mark."""
    return marked_pids("UE_ORPHAN_MARK", mark)


def wait_for(predicate: object, bound: float) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(predicate())  # type: ignore[operator]


@pytest.fixture
def mark() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    for pid in marked(value):  # whatever a failing test left behind
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _start_owner(mark: str, warden: str = "on") -> subprocess.Popen[str]:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, mark, json.dumps(_CHILDREN), warden],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert owner.stdout is not None
    assert owner.stdout.readline().startswith("started 3")
    return owner


def _kill_and_check(owner: subprocess.Popen[str], sig: int, mark: str) -> None:
    # Every kind of child is up (the setsid escapee included) before the owner dies.
    assert wait_for(lambda: len(marked(mark)) >= _EXPECTED, _BOUND), marked(mark)
    owner.send_signal(sig)
    owner.wait(_BOUND)
    if owner.stdout is not None:
        owner.stdout.close()
    gone = wait_for(lambda: not marked(mark), _BOUND)
    assert gone, f"survivors of the owner's {signal.Signals(sig).name}: {marked(mark)}"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_children_die_with_their_python_owner(mark: str, sig: int) -> None:
    _kill_and_check(_start_owner(mark), sig, mark)


def test_without_the_warden_the_pipe_children_would_survive(mark: str) -> None:
    """The control: what the tests above guard against really happens without it
    (the tty session dies of its hangup; the pipe children do not)."""
    owner = _start_owner(mark, warden="off")
    assert wait_for(lambda: len(marked(mark)) >= _EXPECTED, _BOUND)
    owner.kill()
    owner.wait(_BOUND)
    if owner.stdout is not None:
        owner.stdout.close()
    time.sleep(1.0)
    assert len(marked(mark)) >= 5  # sh + 2 sleeps, and the setsid'd sh + sleep


def test_children_of_a_sigkilled_stdio_server_die_with_it(mark: str) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "unified_exec", "serve", "--listen", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert server.stdin is not None and server.stdout is not None

    def send(message: dict[str, object]) -> None:
        assert server.stdin is not None
        server.stdin.write((json.dumps(message) + "\n").encode())
        server.stdin.flush()

    try:
        send({"id": 1, "method": "initialize", "params": {"clientName": "orphans"}})
        send({"method": "initialized", "params": {}})
        env = {"PATH": os.environ.get("PATH", os.defpath), "UE_ORPHAN_MARK": mark}
        for i, (argv, tty) in enumerate(_CHILDREN):
            send(
                {
                    "id": 10 + i,
                    "method": "process/start",
                    "params": {
                        "processId": f"orphan-{i}",
                        "argv": argv,
                        "cwd": "file://" + tempfile.gettempdir(),
                        "env": env,
                        "tty": tty,
                        "pipeStdin": False,
                        "arg0": None,
                    },
                }
            )
        answered: set[int] = set()
        while not {10, 11, 12} <= answered:
            line = server.stdout.readline()
            assert line, "the server closed its stdout"
            msg = json.loads(line)
            if msg.get("id") in (10, 11, 12):
                assert "error" not in msg, msg
                answered.add(msg["id"])
        _kill_and_check(server, signal.SIGKILL, mark)  # type: ignore[arg-type]
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(_BOUND)
        server.stdin.close()
        server.stdout.close()
