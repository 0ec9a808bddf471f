#!/bin/sh
# Smoke test of the built image (for `make image`, not `make test`): run the container
# as the manifests do (read-only root, all caps dropped, token file mounted), then
# check: PID 1 is tini, the server runs as uid 10001, GET /readyz is 200, a client
# without the token is refused, one with it runs a command, and SIGTERM (podman stop)
# drains: exit status 0 well inside the grace period.
# Usage: deploy/smoke-image.sh [IMAGE] [PYTHON]
# On a host with hybrid cgroups and fixed rlimits (a CI sandbox), set e.g.
#   PODMAN="podman --cgroup-manager=cgroupfs"
#   UE_PODMAN_RUN_OPTS="--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=1000:1000"
set -eu
podman=${PODMAN:-podman}
image=${1:-localhost/unified-exec:latest}
here=$(cd "$(dirname "$0")" && pwd)
py=${2:-$(dirname "$here")/.venv/bin/python}
port=${UE_SMOKE_PORT:-18765}
name=ue-smoke-$$
secrets=$(mktemp -d)
chmod 0755 "$secrets"  # the server runs as uid 10001
trap '$podman rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$secrets"' EXIT
"$py" -c 'import secrets; print(secrets.token_hex(32), end="")' > "$secrets/token"
chmod 0644 "$secrets/token"

$podman run -d ${UE_PODMAN_RUN_OPTS:-} --name "$name" --read-only --cap-drop=ALL --security-opt=no-new-privileges \
    --tmpfs /tmp --tmpfs /work:rw,mode=1777 \
    -v "$secrets:/var/run/secrets/unified-exec:ro" -p "127.0.0.1:$port:8765" "$image" >/dev/null

test "$($podman exec "$name" cat /proc/1/comm)" = tini || { echo "FAIL: PID 1 is not tini"; exit 1; }
test "$($podman exec "$name" id -u)" = 10001 || { echo "FAIL: not uid 10001"; exit 1; }

UE_URL="ws://127.0.0.1:$port" UE_TOKEN_FILE="$secrets/token" "$py" - <<'PY'
import os, urllib.request, time, trio
import unified_exec as ue
from unified_exec._events import OutputEvent, ExitedEvent

url = os.environ["UE_URL"]
token = open(os.environ["UE_TOKEN_FILE"]).read()
for _ in range(100):
    try:
        with urllib.request.urlopen(url.replace("ws://", "http://") + "/readyz", timeout=2) as r:
            assert r.status == 200
            break
    except OSError:
        time.sleep(0.2)
else:
    raise SystemExit("FAIL: /readyz never answered 200")

async def main() -> None:
    try:
        async with ue.RemoteExecBackend.connect(url, token="wrong"):
            raise SystemExit("FAIL: a wrong token was accepted")
    except ue.UnifiedExecError:
        pass
    async with ue.RemoteExecBackend.connect(url, token=token) as backend:
        h = await backend.start(ue.ExecRequest(argv=["sh", "-c", "id -u; echo hi from $PWD"]))
        out, code = b"", None
        async for ev in h.events():
            if isinstance(ev, OutputEvent):
                out += ev.data
            elif isinstance(ev, ExitedEvent):
                code = ev.exit_code
        assert code == 0 and out == b"10001\nhi from /work\n", (code, out)
        # A long child, to be killed by the drain.
        await backend.start(ue.ExecRequest(argv=["sleep", "300"]))
    print("smoke: readyz 200, wrong token refused, command ran as 10001")

trio.run(main)
PY

$podman exec -d "$name" sleep 300 >/dev/null   # an extra child, orphaned onto PID 1's group
start=$(date +%s)
$podman stop -t 20 "$name" >/dev/null
took=$(( $(date +%s) - start ))
status=$($podman inspect -f '{{.State.ExitCode}}' "$name")
test "$status" = 0 || { echo "FAIL: exit status $status after SIGTERM"; exit 1; }
test "$took" -lt 15 || { echo "FAIL: drain took $took s"; exit 1; }
echo "smoke: SIGTERM drained in ${took}s, exit 0 — OK"
