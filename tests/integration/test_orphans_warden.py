"""The warden itself: restarts, forks, pid reuse, and running without it (#33).

See test_orphans.py for the main guarantee. Owners run as separate Python processes
so that they can be SIGKILLed; children carry an environment marker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_exec.backends import _warden_main
from unified_exec.backends._warden import start_time

from .test_orphans import marked, wait_for

_BOUND = 15.0
LINKS = ["pipe:[1]", "pipe:[2]", "/dev/pts/7"]

_PRELUDE = textwrap.dedent(
    """
    import os, sys, time, trio
    import unified_exec as ue
    from unified_exec.backends._warden import warden

    mark = sys.argv[1]
    env = dict(os.environ, UE_ORPHAN_MARK=mark)

    def warden_pid():
        inode = os.fstat(warden._fd).st_ino
        for name in os.listdir("/proc"):
            try:
                if os.stat(f"/proc/{name}/fd/0").st_ino == inode and int(name) != os.getpid():
                    return int(name)
            except (OSError, ValueError):
                continue

    async def start(be, script):
        return await ue.UnifiedExecProcess.start(be, ue.ExecRequest(["sh", "-c", script], env=env))
    """
)


@pytest.fixture
def mark() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    for pid in marked(value):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _owner(script: str, mark: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(script), mark],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), line + (proc.stderr.read() if proc.stderr else "")
    return proc, line


def _sigkill(owner: subprocess.Popen[str]) -> None:
    owner.kill()
    owner.wait(_BOUND)
    for stream in (owner.stdout, owner.stderr):
        if stream is not None:
            stream.close()


def test_a_killed_warden_is_replaced_and_told_every_live_child(mark: str) -> None:
    owner, _ = _owner(
        """
        async def main():
            be = ue.LocalPtyBackend()
            first = await start(be, "sleep 1000")
            old = warden_pid()
            os.kill(old, 9)
            while os.path.exists(f"/proc/{old}/fd/0"):
                await trio.sleep(0.01)
            second = await start(be, "sleep 1000")  # finds the warden gone: a new one
            assert warden_pid() not in (None, old)
            print("ready", flush=True)
            await trio.sleep(1000)
        trio.run(main)
        """,
        mark,
    )
    assert wait_for(lambda: [_comm(p) for p in marked(mark)].count("sleep") == 2, _BOUND)
    _sigkill(owner)
    assert wait_for(lambda: not marked(mark), _BOUND), marked(mark)


def test_a_forked_copy_of_the_owner_does_not_keep_the_warden_waiting(mark: str) -> None:
    owner, line = _owner(
        """
        async def main():
            be = ue.LocalPtyBackend()
            child = await start(be, "sleep 1000")
            pid = os.fork()
            if pid == 0:  # the copy lives on after the owner dies
                time.sleep(1000)
                os._exit(0)
            print("ready", pid, flush=True)
            await trio.sleep(1000)
        trio.run(main)
        """,
        mark,
    )
    copy = int(line.split()[1])
    try:
        assert wait_for(lambda: len(marked(mark)) >= 1, _BOUND)
        _sigkill(owner)
        assert os.path.exists(f"/proc/{copy}")
        assert wait_for(lambda: [p for p in marked(mark) if _comm(p) == "sleep"] == [], _BOUND)
    finally:
        try:
            os.kill(copy, signal.SIGKILL)
        except OSError:
            pass


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_without_a_warden_spawns_still_work_and_say_so_once(mark: str) -> None:
    script = _PRELUDE + textwrap.dedent(
        """
        import logging
        logging.basicConfig()
        sys.executable = "/nonexistent/python"  # the warden cannot start
        async def main():
            be = ue.LocalPtyBackend()
            for _ in range(2):
                proc = await start(be, "echo hi")
                print((await proc.wait()).exit_code, flush=True)
        trio.run(main)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, mark],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "0"]
    assert out.stderr.count("cannot start the unified_exec warden") == 1, out.stderr


def test_the_warden_does_not_kill_a_reused_pid() -> None:
    """The warden's own decision, driven directly: a registered pid that now belongs
    to another process (its start time differs) is left alone."""
    other = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        assert wait_for(lambda: start_time(other.pid) > 0, _BOUND)
        entry = _warden_main._Entry(set())
        entry.pid, entry.start = other.pid, start_time(other.pid) - 1
        assert other.pid not in _warden_main._victims({"1": entry}, os.getpid())
        entry.start = start_time(other.pid)
        assert other.pid in _warden_main._victims({"1": entry}, os.getpid())
    finally:
        other.kill()
        other.wait()


def test_the_warden_is_nobodys_child_and_outside_our_session() -> None:
    """conftest's leak check sees every descendant; the warden must not be one."""
    script = _PRELUDE + textwrap.dedent(
        """
        async def main():
            be = ue.LocalPtyBackend()
            await (await start(be, "true")).wait()
            for _ in range(500):  # its first act is to fork away from us
                pid = warden_pid()
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) != os.getpid():
                    break
                await trio.sleep(0.02)
            print(int(fields[1]) != os.getpid(), int(fields[3]) != os.getsid(0), flush=True)
        trio.run(main)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "x"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.split() == ["True", "True"], out.stderr


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("L"), st.integers(1, 5), st.lists(st.sampled_from(LINKS))),
            st.tuples(st.just("P"), st.integers(1, 5), st.just([])),
            st.tuples(st.just("U"), st.integers(1, 5), st.just([])),
            st.tuples(st.just("junk"), st.integers(0, 5), st.just([])),
        ),
        max_size=30,
    ),
    st.binary(max_size=40),
)
def test_the_warden_line_protocol_matches_a_model(
    ops: list[tuple[str, int, list[str]]], garbage: bytes
) -> None:
    """Registrations in any order, and garbage, leave exactly what a dict model says."""
    entries: dict[str, _warden_main._Entry] = {}
    model: dict[str, set[str]] = {}
    me = str(os.getpid())
    for op, key, links in ops:
        if op == "L":
            line = f"L {key} {' '.join(links)}"
            model[str(key)] = set(links)
        elif op == "P":
            line = f"P {key} {me}"
        elif op == "U":
            line = f"U {key}"
            model.pop(str(key), None)
        else:
            line = "?" + garbage.decode("ascii", "replace")  # no opcode starts with ?
        try:
            _warden_main._apply(line, entries)
        except ValueError:
            assert op == "junk"
    assert {k: e.links for k, e in entries.items()} == model
    for entry in entries.values():
        assert entry.pid in (0, os.getpid())


def test_pty_masters_are_matched_to_registrations_in_any_order() -> None:
    """The warden keeps a PTY child's master while it is registered: an M message
    before its L line waits for it, one after its U line is closed at once."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    masters = _warden_main._Masters(theirs)
    entries: dict[str, _warden_main._Entry] = {}
    ptys = [os.openpty() for _ in range(3)]
    try:
        socket.send_fds(ours, [b"M 1"], [ptys[0][0]])  # before its L line
        masters.drain(entries)
        _warden_main._apply("L 1 /dev/pts/x", entries, masters)
        _warden_main._apply("L 2 /dev/pts/y", entries, masters)
        socket.send_fds(ours, [b"M 2"], [ptys[1][0]])
        masters.drain(entries)
        held = {k: e.master for k, e in entries.items()}
        assert all(fd >= 0 for fd in held.values()), held
        for key, (master, _slave) in zip(("1", "2"), ptys, strict=False):
            assert os.ttyname(_slave) and os.fstat(held[key]).st_rdev == os.fstat(master).st_rdev
        _warden_main._apply("U 2", entries, masters)
        with pytest.raises(OSError):
            os.fstat(held["2"])  # closed with its registration
        socket.send_fds(ours, [b"M 2"], [ptys[2][0]])  # after its U line: not kept
        socket.send_fds(ours, [b"junk"], [ptys[2][0]])
        masters.drain(entries)
        assert set(entries) == {"1"} and masters.early == {}
        ours.close()
        masters.drain(entries)
        assert masters.sock is None  # the owner is gone
    finally:
        for master, slave in ptys:
            os.close(master)
            os.close(slave)
        for entry in entries.values():
            _warden_main._close(entry.master)
        ours.close()
        theirs.close()


def test_a_pty_name_freed_by_the_owners_death_is_not_a_target(mark: str) -> None:
    """The owner dies; its PTY child dies; a pty opened on the machine next gets
    the same /dev/pts/N. The warden, still scanning for holders of that name, must not
    kill whoever holds it now: it keeps the name taken (a copy of the master) until
    it is done."""
    owner, line = _owner(
        """
        async def main():
            be = ue.LocalPtyBackend()
            proc = await ue.UnifiedExecProcess.start(
                be, ue.ExecRequest(["sh", "-c", "tty; exec sleep 1000"], tty=True, env=env))
            out = b""
            while b"\\n" not in out:
                out += b"".join(c.data for c in (await proc.read(wait=5)).chunks)
            print("ready", out.split()[0].decode(), warden_pid(), flush=True)
            await trio.sleep(1000)
        trio.run(main)
        """,
        mark,
    )
    _, name, warden = line.split()
    assert name.startswith("/dev/pts/"), line
    # A stranger (no warden of ours) takes that name as soon as it is free.
    stranger = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, signal, time
            deadline = time.monotonic() + {_BOUND}
            while os.path.exists({name!r}) and time.monotonic() < deadline:
                time.sleep(0.001)  # no event says a pty name is free: look again
            held = []  # ptys come lowest number first: the few below it, then it
            while len(held) < 256 and time.monotonic() < deadline:
                master, slave = os.openpty()
                if os.ttyname(slave) == {name!r}:
                    print("got", flush=True)
                    signal.pause()  # hold it until killed
                held.append((master, slave))
            print("never", flush=True)
        """)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _sigkill(owner)
        assert stranger.stdout is not None
        assert stranger.stdout.readline() == "got\n"
        assert wait_for(lambda: not marked(mark), _BOUND), marked(mark)
        # The warden is done (its kill rounds over) once it has exited.
        assert wait_for(lambda: not os.path.exists(f"/proc/{warden}"), _BOUND), warden
        assert stranger.poll() is None, f"the warden killed the new holder of {name}"
    finally:
        stranger.kill()
        stranger.wait()
        if stranger.stdout is not None:
            stranger.stdout.close()
