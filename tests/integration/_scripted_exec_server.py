"""A scripted exec-server on stdio, for faults a real server cannot produce on demand.

Run as ``python _scripted_exec_server.py SCENARIO [READS_FILE]``. Each scenario answers
``process/start`` with a fixed sequence of notifications; ``process/read`` requests are
counted into READS_FILE (one line per read, with a monotonic timestamp).

- ``gap``: output seq 1; seq 2 was evicted by retention before the client could fetch
  it; exit 0 at seq 3; closed at seq 4.
- ``reorder``: seq 2 and 3 first, seq 1 50 ms later (as codex does when stdout and
  stderr race), then exit and closed.
- ``failed``: the new wire form of a process that failed on the server: output seq 1,
  closed seq 2, no exit; ``process/read`` carries ``failure``.
- ``failed-old``: what older servers sent: ``exited`` with exitCode -1, then closed.
- ``badinit``: an ``initialize`` result without ``sessionId``.
"""

from __future__ import annotations

import base64
import json
import sys
import time

SCENARIO = sys.argv[1]
READS = sys.argv[2] if len(sys.argv) > 2 else None


def send(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def out(pid: str, seq: int, data: bytes) -> None:
    chunk = base64.b64encode(data).decode()
    send(
        {
            "method": "process/output",
            "params": {"processId": pid, "seq": seq, "stream": "stdout", "chunk": chunk},
        }
    )


def exited(pid: str, seq: int, code: int) -> None:
    send({"method": "process/exited", "params": {"processId": pid, "seq": seq, "exitCode": code}})


def closed(pid: str, seq: int) -> None:
    send({"method": "process/closed", "params": {"processId": pid, "seq": seq}})


def read_result(
    next_seq: int, *, code: int | None, failure: str | None = None
) -> dict[str, object]:
    return {
        "chunks": [], "nextSeq": next_seq, "exited": code is not None or failure is not None,
        "exitCode": code, "closed": True, "failure": failure, "sandboxDenied": False,
    }  # fmt: skip


for line in sys.stdin:
    msg = json.loads(line)
    method, rid = msg.get("method"), msg.get("id")
    if method == "initialize":
        if SCENARIO == "badinit":
            send({"id": rid, "result": {}})
        else:
            send({"id": rid, "result": {"sessionId": "s", "environmentInfo": {}}})
    elif method == "process/start":
        pid = msg["params"]["processId"]
        send({"id": rid, "result": {"processId": pid}})
        if SCENARIO == "gap":
            out(pid, 1, b"first\n")
            exited(pid, 3, 0)
            closed(pid, 4)
        elif SCENARIO == "reorder":
            out(pid, 2, b"two\n")
            time.sleep(0.005)
            out(pid, 3, b"three\n")
            time.sleep(0.05)
            out(pid, 1, b"one\n")
            exited(pid, 4, 0)
            closed(pid, 5)
        elif SCENARIO == "failed":
            out(pid, 1, b"partial\n")
            closed(pid, 2)
        elif SCENARIO == "failed-old":
            out(pid, 1, b"partial\n")
            exited(pid, 2, -1)
            closed(pid, 3)
    elif method == "process/read":
        if READS:
            with open(READS, "a") as f:
                f.write(f"{time.monotonic()}\n")
        if SCENARIO == "gap":
            send({"id": rid, "result": read_result(5, code=0)})
        elif SCENARIO == "failed":
            send(
                {
                    "id": rid,
                    "result": read_result(3, code=None, failure="sandbox died: disk on fire"),
                }
            )
        elif SCENARIO == "failed-old":
            send({"id": rid, "result": read_result(4, code=-1)})
        else:
            send({"id": rid, "result": read_result(6, code=0)})
    elif rid is not None:
        send({"id": rid, "result": {}})
