"""A short tour of unified_exec, printed as a transcript.

1. An interactive PTY session: a real bash, driven like a person at a terminal.
2. A pipe process: stdin in, stdout and stderr apart, exit code out.
3. Terminating a process group that would otherwise run forever.
"""

from __future__ import annotations

import trio

import unified_exec as ue


def show(label: str, data: bytes) -> None:
    for line in data.decode(errors="replace").replace("\r\n", "\n").splitlines():
        print(f"  {label} | {line}")


async def read_until(proc: ue.UnifiedExecProcess, cursor: int, marker: bytes) -> tuple[bytes, int]:
    """Collect output until ``marker`` shows up (or 10 s pass)."""
    seen = bytearray()
    with trio.move_on_after(10):
        while marker not in seen:
            res = await proc.read(after_seq=cursor, wait=5)
            cursor = res.next_seq - 1
            seen += b"".join(c.data for c in res.chunks)
            if res.closed:
                break
    return bytes(seen), cursor


async def pty_session(backend: ue.LocalPtyBackend) -> None:
    print("== 1. interactive bash on a PTY ==")
    req = ue.ExecRequest(
        argv=["bash", "--norc", "--noprofile", "-i"],
        tty=True,
        env={"PATH": "/usr/bin:/bin", "PS1": "demo$ ", "TERM": "dumb"},
        size=(24, 100),
    )
    async with ue.open_process(backend, req) as proc:
        out, cursor = await read_until(proc, 0, b"demo$ ")
        show("pty", out)
        for line in ["tty", "stty size", "x=41; echo $((x + 1))", "exit 5"]:
            await proc.write(line + "\n")
            out, cursor = await read_until(proc, cursor, b"demo$ " if line != "exit 5" else b"\0")
            show("pty", out)
        state = await proc.wait()
        print(f"  -> {state}\n")


async def pipe_process(backend: ue.LocalPtyBackend) -> None:
    print("== 2. pipes: stdin in, stdout/stderr apart ==")
    req = ue.ExecRequest(
        argv=["sh", "-c", "read name; echo hello, $name; echo 'a warning' >&2; exit 3"],
        pipe_stdin=True,
    )
    async with ue.open_process(backend, req) as proc:
        status = await proc.write("unified_exec\n")
        print(f"  write -> {status.value}")
        async for event in proc.events():
            if isinstance(event, ue.OutputEvent):
                show(f"{event.seq} {event.stream}", event.data)
            else:
                print(f"  {event}")
        print(f"  -> {proc.state}\n")


async def terminate_group(backend: ue.LocalPtyBackend) -> None:
    print("== 3. terminate a whole process group ==")
    req = ue.ExecRequest(argv=["sh", "-c", "sleep 1000 & sleep 1000 & echo started; wait"])
    async with ue.open_process(backend, req) as proc:
        out, _ = await read_until(proc, 0, b"started")
        show("stdout", out)
        state = await proc.terminate()
        print(f"  terminate -> exit code {state.exit_code} (128 + SIGTERM)")
        print(f"  write after terminate -> {(await proc.write('x')).value}")


async def main() -> None:
    async with ue.LocalPtyBackend() as backend:
        await pty_session(backend)
        await pipe_process(backend)
        await terminate_group(backend)


if __name__ == "__main__":
    trio.run(main)
