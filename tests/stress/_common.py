"""Shared pieces of the stress suite: mode, figures, markers, server subprocesses.

Two modes: short (the default, inside ``make test``: small counts, a few seconds per
test) and long (``UE_STRESS=long``, ``make stress``: the counts the README quotes).
Every figure a test measures goes to stdout (run with ``-s``) and into
``benchmarks/results/stress-<mode>.json``.

Children the suite starts carry ``UE_STRESS_MARKER=<marker>`` in their environment, so
a scan of ``/proc/*/environ`` finds every survivor — whoever its parent is by then (a
SIGKILLed server's children are reparented away from us).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import _support

MODE = "long" if os.environ.get("UE_STRESS", "").lower() == "long" else "short"
LONG = MODE == "long"
ROOT = Path(__file__).resolve().parents[2]
RESULTS_PATH = ROOT / "benchmarks" / "results" / f"stress-{MODE}.json"
MARKER_VAR = "UE_STRESS_MARKER"
SERVE = [sys.executable, "-m", "unified_exec", "serve"]
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"

_figures: dict[str, dict[str, Any]] = {}


def pick(short: Any, long: Any) -> Any:
    """The short-mode or the long-mode value."""
    return long if LONG else short


def record(section: str, **figures: Any) -> None:
    """Print figures and keep them for the results file."""
    _figures.setdefault(section, {}).update(figures)
    print(f"\n[stress {MODE}] {section}: {json.dumps(figures, sort_keys=True)}", flush=True)


def write_results() -> None:
    """Merge this run's figures into benchmarks/results/stress-<mode>.json."""
    if not _figures:
        return
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    # pytest-xdist workers each merge their own figures at the end: one at a time
    # (a lock on the directory, so that no lock file is left in the tree)
    fd = os.open(RESULTS_PATH.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _merge_results()
    finally:
        os.close(fd)


def _merge_results() -> None:
    try:
        old = json.loads(RESULTS_PATH.read_text())
    except (OSError, ValueError):
        old = {}
    sections = old.get("sections", {}) if isinstance(old, dict) else {}
    sections.update(_figures)
    out = {
        "mode": MODE,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sections": sections,
    }
    tmp = RESULTS_PATH.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    tmp.replace(RESULTS_PATH)


# -- markers -----------------------------------------------------------------------


new_marker = _support.new_marker


def child_env(marker: str, **extra: str) -> dict[str, str]:
    return {"PATH": CHILD_PATH, "LANG": "C.UTF-8", MARKER_VAR: marker, **extra}


def marked_pids(marker: str) -> set[int]:
    """Processes (zombies too) whose environment carries the marker, or one made from
    it by appending ``-suffix``."""
    return set(_support.marked_pids(MARKER_VAR, marker, derived=True, zombies=True))


def await_no_survivors(marker: str, timeout: float) -> tuple[set[int], float]:
    """Poll until no marked process is left (or timeout); kill what is left.

    Returns (survivors at the deadline, seconds waited). Survivors are SIGKILLed
    afterwards, so that one failing test does not poison the next.
    """
    start = time.monotonic()
    survivors = marked_pids(marker)
    while survivors and time.monotonic() - start < timeout:
        time.sleep(0.1)
        survivors = marked_pids(marker)
    waited = time.monotonic() - start
    for pid in survivors:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return survivors, waited


def describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd}")
    return out


# -- memory ------------------------------------------------------------------------


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (or VmHWM, the peak) of a process in MiB; 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tracebacks_in(text: str) -> list[str]:
    """Each logged traceback, abridged: a server that logs one hit an unexpected
    exception (its boundary caught it, but the input found a bug)."""
    out = []
    for part in text.split("Traceback (most recent call last):")[1:]:
        lines = [ln for ln in part.strip().splitlines() if ln.strip()]
        out.append(" | ".join(lines[-3:])[:600])
    return out


# -- server subprocesses -----------------------------------------------------------


def _serve_help() -> str:
    try:
        return subprocess.run(
            [*SERVE, "--help"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _limit_fds(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class ServerProc:
    """``unified-exec serve`` as a subprocess: websocket on 127.0.0.1, or stdio.

    The websocket server always runs with a token. It is passed the codex way
    (``--ws-auth capability-token --ws-token-file``) when the CLI has those flags, else
    through ``$UNIFIED_EXEC_TOKEN`` — never on the command line. Its stderr goes to a
    file, so that a full pipe can never stall it and the log can be checked for
    tracebacks afterwards.
    """

    def __init__(
        self,
        *,
        listen: str = "ws://127.0.0.1:0",
        extra: list[str] | None = None,
        nofile: int | None = None,
    ):
        self.dir = tempfile.mkdtemp(prefix="ue-stress-")
        self.token = secrets.token_urlsafe(24)
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        args = [*SERVE, "--listen", listen, *(extra or [])]
        env = dict(os.environ)
        env.pop("UNIFIED_EXEC_TOKEN", None)
        if listen != "stdio":
            if "--ws-token-file" in _serve_help():
                path = os.path.join(self.dir, "token")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, self.token.encode() + b"\n")
                os.close(fd)
                args += ["--ws-auth", "capability-token", "--ws-token-file", path]
            else:
                env["UNIFIED_EXEC_TOKEN"] = self.token
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if listen == "stdio" else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            start_new_session=True,
            preexec_fn=(lambda: _limit_fds(nofile)) if nofile else None,  # noqa: PLW1509
        )
        self.pid = self.proc.pid
        self.url = ""
        if listen != "stdio":
            self.url = self._read_url(timeout=30)

    def _read_url(self, timeout: float) -> str:
        import selectors

        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=0.2):
                    if self.proc.poll() is not None:
                        break
                    continue
                data = os.read(self.proc.stdout.fileno(), 4096)
                if not data:
                    break
                buf += data
                for line in buf.split(b"\n")[:-1]:
                    text = line.decode(errors="replace").strip()
                    if text.startswith("ws://"):
                        return text.split()[0]
        finally:
            sel.close()
        self.stop()
        raise AssertionError(f"server printed no ws:// URL; stdout={buf!r} stderr={self.log()!r}")

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"Authorization", b"Bearer " + self.token.encode())]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return Path(self.stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def tracebacks(self) -> list[str]:
        return tracebacks_in(self.log())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Stop by pid (the server's own children are its business); reap it."""
        if self.proc.poll() is None:
            self.kill(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(OSError):
            self._stderr.close()
        return self.proc.returncode


@contextlib.contextmanager
def ws_server(extra: list[str] | None = None, nofile: int | None = None) -> Iterator[ServerProc]:
    server = ServerProc(extra=extra, nofile=nofile)
    try:
        yield server
    finally:
        server.stop()
