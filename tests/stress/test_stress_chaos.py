"""Chaos: random start / write / terminate / interrupt / disconnect / server SIGKILL /
server SIGTERM, seeded, against a websocket server subprocess; then 0 survivors.

Every child carries a marker naming the server incarnation that started it, so
after a SIGKILL or SIGTERM we can tell whose children outlived it. A SIGKILLed
server cannot clean up itself: its children must die through the local backend's
warden. A detached session is cleaned up by the server after ``--detach-timeout``.
Set ``UE_STRESS_SEED`` to replay a run; the seed is printed with the figures.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

import trio

from ._common import (
    ServerProc,
    await_no_survivors,
    child_env,
    describe,
    marked_pids,
    new_marker,
    pick,
    record,
    tracebacks_in,
)
from ._wire import Peer, stdio_peer, ws_peer

STEPS = pick(40, 400)
TIME_BUDGET = pick(60.0, 480.0)
DETACH = 2.0
CLEANUP_BOUND = 20.0  # how long the system gets to reap after a kill (generous)
SEED = int(os.environ.get("UE_STRESS_SEED", pick(7, 20261202)))

CHILDREN: list[tuple[list[str], bool, bool]] = [  # argv, tty, pipeStdin
    (["sleep", "1000"], False, False),
    (["sh", "-c", "sleep 1000 & sleep 1000"], False, False),
    (["sh", "-c", "setsid sleep 1000 & sleep 1000"], False, False),
    (["sh", "-c", "sleep 1000 & wait"], True, False),
    (["sh", "-c", "trap '' INT TERM HUP; sleep 1000"], False, False),
    (["cat"], False, True),
    (["sh", "-c", "while read l; do echo got $l; done"], True, False),
    (["yes"], False, False),
    (["echo", "hi"], False, False),
]
ACTIONS = {
    "start": 30,
    "write": 10,
    "terminate": 10,
    "interrupt": 8,
    "disconnect": 8,
    "pause": 5,
    "server_sigkill": 3,
    "server_sigterm": 3,
}


class Chaos:
    """The driver. Each server incarnation is a websocket server (most of the time)
    or a stdio server — a Python process owning ``LocalPtyBackend`` children, which
    ends at EOF on its stdin ("disconnect") or by a signal."""

    def __init__(self, rng: random.Random, base: str, tmp: str) -> None:
        self.rng = rng
        self.base = base
        self.tmp = tmp
        self.incarnation = 0
        self.kind = "ws"
        self.server: ServerProc | None = None
        self.servers: list[ServerProc] = []
        self.stdio_logs: list[str] = []
        self.marker = ""
        self.peer: Peer | None = None
        self._peer_cm: Any = None
        self.session_id: str | None = None
        self.pids: list[str] = []
        self.next_id = 0
        self.counts: dict[str, int] = {}
        self.crashes: list[str] = []
        self.survivors: dict[str, list[str]] = {}
        self.sigterm_exit_s: list[float] = []
        self.sigterm_rc: list[int | None] = []
        self.resumed = 0
        self.incarnations = {"ws": 0, "stdio": 0}

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _new_incarnation(self) -> None:
        self.incarnation += 1
        self.marker = f"{self.base}-{self.incarnation}"
        self.kind = "stdio" if self.rng.random() < 0.3 else "ws"
        self.incarnations[self.kind] += 1
        self.session_id = None
        self.pids = []
        if self.kind == "ws":
            self.server = ServerProc(extra=["--detach-timeout", str(DETACH)])
            self.servers.append(self.server)

    # -- connection and server lifecycle ---------------------------------------------

    async def ensure(self) -> Peer:
        if self.kind == "ws" and self.server is not None and not self.server.alive():
            rc = self.server.proc.returncode
            self.crashes.append(f"ws server {self.incarnation} died by itself (rc {rc}): "
                                f"{self.server.log()[-1500:]}")  # fmt: skip
            await self.drop_peer()
            self.server = None
        if self.kind == "stdio" and self.peer is not None and self.peer.closed:
            self.crashes.append(f"stdio server {self.incarnation} hung up by itself: "
                                f"{Path(self.stdio_logs[-1]).read_text()[-1500:]}")  # fmt: skip
            await self.drop_peer(check=False)
        if self.peer is None and (self.kind == "stdio" or self.server is None):
            self._new_incarnation()
        if self.peer is None or self.peer.closed:
            await self.drop_peer()
            if self.kind == "ws":
                assert self.server is not None
                self._peer_cm = ws_peer(self.server.url, self.server.headers)
            else:
                log = os.path.join(self.tmp, f"stdio-{self.incarnation}.log")
                self.stdio_logs.append(log)
                self._peer_cm = stdio_peer(log)
            self.peer = await self._peer_cm.__aenter__()
            self.peer.slim = True
            await self.initialize(self.peer)
        assert self.peer is not None
        return self.peer

    async def initialize(self, peer: Peer) -> None:
        if self.session_id is not None and self.rng.random() < 0.6:
            params = {"clientName": "chaos", "resumeSessionId": self.session_id}
            reply = await peer.call("resume", "initialize", params, timeout=30)
            if reply is not None and "result" in reply:
                self.resumed += 1
                await peer.send({"method": "initialized"})
                return
        reply = await peer.call("init", "initialize", {"clientName": "chaos"}, timeout=30)
        if reply is None or "result" not in reply:
            self.crashes.append(f"initialize failed ({self.kind}): {reply!r}")
            return
        await peer.send({"method": "initialized"})
        self.session_id = reply["result"]["sessionId"]
        self.pids = []  # a new session: the old one's children die after DETACH

    async def drop_peer(self, *, abrupt: bool = False, check: bool = True) -> None:
        """Close the connection (abrupt: an RST, no closing handshake). Closing a stdio
        server's stdin ends that server: its children must then be gone."""
        if self._peer_cm is None:
            return
        cm, peer, self._peer_cm, self.peer = self._peer_cm, self.peer, None, None
        if abrupt and peer is not None:
            stream = getattr(getattr(peer, "ws", None), "_stream", None)
            sock = getattr(stream, "socket", None)
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with contextlib.suppress(Exception):
                    await stream.aclose()
        with contextlib.suppress(Exception):
            await cm.__aexit__(None, None, None)
        if self.kind == "stdio" and check:
            rc = getattr(getattr(peer, "proc", None), "returncode", None)
            if rc != 0:
                self.crashes.append(f"stdio server exit status {rc} at EOF (expected 0)")
            await self._survivors("after stdio EOF")

    async def _survivors(self, cause: str) -> None:
        left, _ = await trio.to_thread.run_sync(await_no_survivors, self.marker, CLEANUP_BOUND)
        if left:
            self.survivors.setdefault(cause, []).extend(describe(left))

    async def kill_server(self, sig: int) -> None:
        """Signal the server while its connection is live, then wait for it to go."""
        name = signal.Signals(sig).name
        t0 = time.monotonic()
        if self.kind == "ws":
            assert self.server is not None
            server = self.server
            server.kill(sig)
            with trio.move_on_after(30):
                while server.alive():
                    await trio.sleep(0.05)
            exited = time.monotonic() - t0
            rc = server.stop()
            await self.drop_peer()
            self.server = None
        else:
            peer = self.peer
            assert peer is not None
            proc = peer.proc  # type: ignore[attr-defined]
            os.kill(proc.pid, sig)
            with trio.move_on_after(30):
                await proc.wait()
            exited = time.monotonic() - t0
            await self.drop_peer(check=False)
            rc = proc.returncode
        if sig == signal.SIGTERM:
            self.sigterm_exit_s.append(round(exited, 2))
            self.sigterm_rc.append(rc)
        await self._survivors(f"after {self.kind} server {name}")

    # -- one step --------------------------------------------------------------------

    async def start(self, peer: Peer, child: tuple[list[str], bool, bool]) -> None:
        argv, tty, pipe = child
        pid = f"c{self._id()}"
        params = {
            "processId": pid,
            "argv": argv,
            "cwd": "file:///tmp",
            "env": child_env(self.marker),
            "tty": tty,
            "pipeStdin": pipe,
        }
        reply = await peer.call(self._id(), "process/start", params, timeout=30)
        if reply is not None and "result" in reply:
            self.pids.append(pid)
        elif reply is not None:
            self.crashes.append(f"start refused: {reply!r}"[:300])

    async def step(self, action: str) -> None:
        self.counts[action] = self.counts.get(action, 0) + 1
        peer = await self.ensure()
        rng = self.rng
        if action.startswith("server_"):
            # A kill always has victims: a child whose grandchild left its session.
            await self.start(peer, (["sh", "-c", "setsid sleep 1000 & sleep 1000"], False, False))
        if action == "start":
            await self.start(peer, rng.choice(CHILDREN))
        elif action in ("write", "terminate", "interrupt") and self.pids:
            pid = rng.choice(self.pids)
            if action == "write":
                chunk = base64.b64encode(f"line {self._id()}\n".encode()).decode()
                params = {"processId": pid, "chunk": chunk, "writeId": f"w{self._id()}"}
                await peer.send({"id": self._id(), "method": "process/write", "params": params})
            elif action == "terminate":
                await peer.send(
                    {"id": self._id(), "method": "process/terminate", "params": {"processId": pid}}
                )
            else:
                params = {"processId": pid, "signal": "interrupt"}
                await peer.send({"id": self._id(), "method": "process/signal", "params": params})
        elif action == "disconnect":
            await self.drop_peer(abrupt=rng.random() < 0.5)
        elif action == "pause":
            await trio.sleep(rng.uniform(0, 0.5))
        elif action == "server_sigkill":
            await self.kill_server(signal.SIGKILL)
        elif action == "server_sigterm":
            await self.kill_server(signal.SIGTERM)
        await trio.sleep(rng.uniform(0, 0.05))

    async def finish(self) -> None:
        """Stop the last server politely, then give everything a bounded time to go."""
        if self.kind == "ws" and self.server is not None:
            await self.kill_server(signal.SIGTERM)
        await self.drop_peer()


async def test_chaos_leaves_no_survivors(tmp_path: Any) -> None:
    rng = random.Random(SEED)
    base = new_marker("chaos")
    chaos = Chaos(rng, base, str(tmp_path))
    actions, weights = zip(*ACTIONS.items(), strict=True)
    started = time.monotonic()
    steps = 0
    final_wait = float("nan")
    try:
        with trio.fail_after(TIME_BUDGET + 120):
            while steps < STEPS and time.monotonic() - started < TIME_BUDGET:
                action = rng.choices(actions, weights)[0]
                # Every run, however short, disconnects and kills a server both ways.
                if steps in (STEPS // 6, STEPS // 2):
                    action = "disconnect"
                elif steps == STEPS // 3:
                    action = "server_sigkill"
                elif steps == 2 * STEPS // 3:
                    action = "server_sigterm"
                await chaos.step(action)
                steps += 1
            await chaos.finish()
        left, final_wait = await trio.to_thread.run_sync(await_no_survivors, base, CLEANUP_BOUND)
        if left:
            chaos.survivors.setdefault("at the end", []).extend(describe(left))
    finally:
        for server in chaos.servers:
            server.stop(signal.SIGKILL)
        tracebacks = [t for s in chaos.servers for t in s.tracebacks()]
        for log in chaos.stdio_logs:
            tracebacks += tracebacks_in(Path(log).read_text(errors="replace"))
        total = sum(len(v) for v in chaos.survivors.values())
        record(
            "chaos",
            seed=SEED,
            steps=steps,
            actions=dict(sorted(chaos.counts.items())),
            server_incarnations=chaos.incarnation,
            incarnations_by_transport=chaos.incarnations,
            sessions_resumed=chaos.resumed,
            unexpected_server_deaths=len(chaos.crashes),
            sigterm_exit_seconds=chaos.sigterm_exit_s,
            sigterm_exit_codes=chaos.sigterm_rc,
            survivors=total,
            survivors_by_cause={k: len(v) for k, v in chaos.survivors.items()},
            server_tracebacks=len(tracebacks),
            final_cleanup_seconds=round(final_wait, 2),
            seconds=round(time.monotonic() - started, 1),
        )
        for pid in marked_pids(base):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert not chaos.crashes, chaos.crashes[:5]
    assert not chaos.survivors, chaos.survivors
    assert not tracebacks, tracebacks[:5]
    # Issue 7 section 3: on SIGTERM the server terminates every child and exits 0.
    assert all(rc == 0 for rc in chaos.sigterm_rc), chaos.sigterm_rc
    assert all(s < 15 for s in chaos.sigterm_exit_s), chaos.sigterm_exit_s
