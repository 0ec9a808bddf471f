"""Nothing lost, nothing leaked: volume, backpressure, retention, fds and teardown."""

from __future__ import annotations

import base64
import gc
import hashlib
import os
import time

import pytest
import trio

import unified_exec as ue

from .helpers import alive, collect, session_members, sh

MODES = [pytest.param(False, id="pipes"), pytest.param(True, id="pty")]
MiB = 1 << 20


@pytest.fixture
def backend() -> ue.LocalPtyBackend:
    return ue.LocalPtyBackend(kill_grace=0.5)


async def test_64mib_through_pipes_arrives_intact(
    backend: ue.LocalPtyBackend, tmp_path: os.PathLike[str]
) -> None:
    data_file = os.path.join(tmp_path, "blob")
    blob = os.urandom(64 * MiB)
    with open(data_file, "wb") as f:
        f.write(blob)
    with trio.fail_after(120):
        t0 = time.perf_counter()
        async with ue.open_process(backend, ue.ExecRequest(["cat", data_file])) as p:
            digest = hashlib.sha256()
            total = 0
            async for ev in p.events():
                assert not isinstance(ev, ue.LostEvent | ue.FailedEvent)
                if isinstance(ev, ue.OutputEvent):
                    digest.update(ev.data)
                    total += len(ev.data)
            elapsed = time.perf_counter() - t0
    assert total == len(blob)
    assert digest.hexdigest() == hashlib.sha256(blob).hexdigest()
    print(f"pipes: 64 MiB in {elapsed:.2f} s = {64 / elapsed:.0f} MiB/s")


async def test_64mib_through_a_pty_arrives_intact(
    backend: ue.LocalPtyBackend, tmp_path: os.PathLike[str]
) -> None:
    # Text, since a cooked tty turns \n into \r\n; that mapping is the only change.
    data_file = os.path.join(tmp_path, "blob.txt")
    text = base64.encodebytes(os.urandom(48 * MiB))  # 76-char lines, about 64.9 MiB
    with open(data_file, "wb") as f:
        f.write(text)
    expected = text.replace(b"\n", b"\r\n")
    with trio.fail_after(240):
        t0 = time.perf_counter()
        req = ue.ExecRequest(["cat", data_file], tty=True)
        async with ue.open_process(backend, req) as p:
            digest = hashlib.sha256()
            total = 0
            async for ev in p.events():
                assert not isinstance(ev, ue.LostEvent | ue.FailedEvent)
                if isinstance(ev, ue.OutputEvent):
                    digest.update(ev.data)
                    total += len(ev.data)
            elapsed = time.perf_counter() - t0
    assert total == len(expected)
    assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()
    print(
        f"pty: {len(text) / MiB:.1f} MiB in {elapsed:.2f} s = {len(text) / MiB / elapsed:.0f} MiB/s"
    )


async def test_stdout_and_stderr_both_full_do_not_deadlock(backend: ue.LocalPtyBackend) -> None:
    script = "head -c 4194304 /dev/zero & head -c 4194304 /dev/zero >&2; wait"
    with trio.fail_after(30):
        async with ue.open_process(backend, sh(script)) as p:
            out, _ = await collect(p)
    assert len(out["stdout"]) == len(out["stderr"]) == 4 * MiB


async def test_slow_consumer_throttles_the_child(
    backend: ue.LocalPtyBackend, tmp_path: os.PathLike[str]
) -> None:
    marker = os.path.join(tmp_path, "done")
    script = f"head -c {8 * MiB} /dev/zero; touch {marker}"
    with trio.fail_after(60):
        async with ue.open_process(backend, sh(script)) as p:
            events = p.events()
            total = 0
            first = await events.__anext__()
            assert isinstance(first, ue.OutputEvent)
            total += len(first.data)
            await trio.sleep(1.0)
            # 8 MiB cannot fit in pipe + queue + retention: the child must be blocked.
            assert not os.path.exists(marker)
            async for ev in events:
                assert not isinstance(ev, ue.LostEvent | ue.FailedEvent)
                if isinstance(ev, ue.OutputEvent):
                    total += len(ev.data)
    assert total == 8 * MiB
    assert os.path.exists(marker)


async def test_without_consumer_the_child_runs_free_and_retention_reports_gaps(
    backend: ue.LocalPtyBackend,
) -> None:
    with trio.fail_after(60):
        async with ue.open_process(backend, sh(f"head -c {8 * MiB} /dev/zero; echo END")) as p:
            state = await p.wait()  # nobody reads: the child must not block
            assert state.exit_code == 0
            res = await p.read(after_seq=0)
            assert res.evicted.start == 1 and len(res.evicted) > 0
            assert res.chunks[0].seq == res.evicted.stop
            retained = b"".join(c.data for c in res.chunks)
            assert len(retained) <= ue.DEFAULT_RETENTION_BYTES
            assert retained.endswith(b"\0END\n")
            # A reader whose cursor is inside the evicted range is told so, too.
            mid = await p.read(after_seq=res.evicted.stop - 2)
            assert mid.evicted == range(res.evicted.stop - 1, res.evicted.stop)
            # And an events() iterator that starts late reports the gap first.
            late = p.events()
            lost = await late.__anext__()
            assert lost == ue.LostEvent(first_seq=1, last_seq=res.evicted.stop - 1)
            await late.aclose()


async def test_retention_is_configurable(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(30):
        req = sh("for i in $(seq 200); do echo line$i; done")
        async with ue.open_process(backend, req, retention_bytes=64) as p:
            await p.wait()
            res = await p.read()
            assert sum(len(c.data) for c in res.chunks) <= 64 or len(res.chunks) == 1
            assert b"".join(c.data for c in res.chunks).endswith(b"line200\n")
        with pytest.raises(ue.InvalidRequestError):
            await ue.UnifiedExecProcess.start(backend, sh("true"), retention_bytes=-1)


async def test_abandoned_iterator_does_not_block_the_child(backend: ue.LocalPtyBackend) -> None:
    with trio.fail_after(30):
        async with ue.open_process(backend, sh(f"head -c {8 * MiB} /dev/zero")) as p:
            async for _ in p.events():
                break  # leaving the loop drops the iterator, and with it its hold
            assert (await p.wait()).exit_code == 0


@pytest.mark.parametrize("tty", MODES)
async def test_child_inherits_only_stdio(backend: ue.LocalPtyBackend, tty: bool) -> None:
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_r, True)
    os.set_inheritable(leak_w, True)
    try:
        with trio.fail_after(10):
            async with ue.open_process(backend, sh("ls /proc/$$/fd", tty=tty)) as p:
                out, _ = await collect(p)
    finally:
        os.close(leak_r)
        os.close(leak_w)
    fds = sorted(int(x) for x in (out.get("pty") or out["stdout"]).split())
    assert fds == [0, 1, 2]


@pytest.mark.parametrize("tty", MODES)
async def test_cancelling_the_owner_kills_the_whole_group(
    backend: ue.LocalPtyBackend, tty: bool
) -> None:
    pids: list[int] = []

    async def owner(task_status: trio.TaskStatus[None]) -> None:
        async with ue.open_process(backend, sh("sleep 1000 & sleep 1000", tty=tty)) as p:
            pids.append(p._handle.pid)  # type: ignore[attr-defined]
            task_status.started()
            await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(owner)
            while len(session_members(pids[0])) < 2:  # sh and both sleeps are up
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert session_members(pids[0]) == set()
    assert not alive(pids[0])


@pytest.mark.parametrize("tty", MODES)
async def test_setsid_grandchild_holding_output_does_not_hang_wait(tty: bool) -> None:
    backend = ue.LocalPtyBackend(post_exit_grace=0.3)
    with trio.fail_after(15):
        async with ue.open_process(
            backend, sh("setsid sleep 1000 & echo $!; echo parent-done", tty=tty)
        ) as p:
            state = await p.wait()
            out, _ = await collect(p)
    text = (out.get("pty") or out["stdout"]).decode()
    grandchild = int(text.split()[0])
    assert state.exit_code == 0 and "parent-done" in text
    await trio.sleep(0.1)
    assert not alive(grandchild)


@pytest.mark.parametrize("tty", MODES)
async def test_terminate_kills_a_setsid_grandchild(backend: ue.LocalPtyBackend, tty: bool) -> None:
    with trio.fail_after(15):
        async with ue.open_process(
            backend, sh("setsid sleep 1000 & echo $!; sleep 1000", tty=tty)
        ) as p:
            res = await p.read(wait=5)
            grandchild = int(res.chunks[0].data.split()[0])
            assert alive(grandchild)
            state = await p.terminate()
    assert state.exit_code in (143, 137)
    await trio.sleep(0.1)
    assert not alive(grandchild)


@pytest.mark.parametrize("tty", MODES)
async def test_terminate_escalates_to_sigkill(tty: bool) -> None:
    backend = ue.LocalPtyBackend(kill_grace=0.2)
    with trio.fail_after(10):
        req = sh("trap '' TERM; echo ready; while :; do sleep 0.05; done", tty=tty)
        async with ue.open_process(backend, req) as p:
            await p.read(wait=5)
            state = await p.terminate()
    assert state.exit_code == 137


def _open_fds() -> set[int]:
    return {int(x) for x in os.listdir("/proc/self/fd")}


async def test_500_cycles_leak_no_fd_and_no_zombie(backend: ue.LocalPtyBackend) -> None:
    async def cycle(i: int) -> None:
        async with ue.open_process(backend, ue.ExecRequest(["true"], tty=i % 2 == 0)) as p:
            assert (await p.wait()).exit_code == 0

    with trio.fail_after(120):
        await cycle(0)
        gc.collect()
        before = _open_fds()
        for i in range(500):
            await cycle(i)
        gc.collect()
        after = _open_fds()
    assert after == before
    with pytest.raises(ChildProcessError):
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)


async def test_dropped_process_is_terminated(backend: ue.LocalPtyBackend) -> None:
    proc = await ue.UnifiedExecProcess.start(backend, sh("sleep 1000"))
    pid = proc._handle.pid  # type: ignore[attr-defined]
    del proc
    gc.collect()
    with trio.fail_after(10):
        while alive(pid):
            await trio.sleep(0.02)


async def test_backend_aclose_terminates_what_it_runs() -> None:
    backend = ue.LocalPtyBackend(kill_grace=0.2)
    procs = [await ue.UnifiedExecProcess.start(backend, sh("sleep 1000")) for _ in range(3)]
    with trio.fail_after(10):
        await backend.aclose()
        for p in procs:
            assert p._handle._closed.is_set()  # type: ignore[attr-defined]
            assert (await p.wait()).exit_code == 143
    with pytest.raises(ue.InvalidRequestError, match="closed"):
        await backend.start(sh("true"))


def test_end_of_the_trio_run_reaps_everything() -> None:
    """Processes nobody waited for die with the run that started them."""
    pids: list[int] = []

    async def main() -> None:
        backend = ue.LocalPtyBackend()
        for tty in (False, True):
            p = await ue.UnifiedExecProcess.start(backend, sh("sleep 1000", tty=tty))
            pids.append(p._handle.pid)  # type: ignore[attr-defined]

    trio.run(main)
    assert pids and not any(alive(pid) for pid in pids)


def test_start_outside_trio_spawns_nothing() -> None:
    backend = ue.LocalPtyBackend()
    with pytest.raises(RuntimeError):
        trio_free = backend.start(sh("sleep 1000"))
        trio_free.send(None)
