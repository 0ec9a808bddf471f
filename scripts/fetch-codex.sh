#!/usr/bin/env bash
# Fetch the real `codex` binary (the exec-server we interoperate with) into a cache
# outside the repo, check it against the pinned npm integrity, print its path.
#
#   scripts/fetch-codex.sh            # 0.169.0, the version the protocol notes describe
#   scripts/fetch-codex.sh 0.171.0    # any version pinned below
#
# Only pinned versions can be fetched: the tarball's sha512 must match what the npm
# registry published (`npm view @openai/codex@VERSION-linux-x64 dist.integrity`).
# Reuses the cache when present. Exits non-zero with a clear message on failure.
set -euo pipefail

VERSION="${1:-0.169.0}"
case "$VERSION" in
  0.169.0) INTEGRITY="sha512-o05NyAOCDygSPRo1yinzxvkRSdmsZyBD9E7mbpmjRanSfM8lypqWtQgEo4XfNkwhuCR2aFu8mlGOsQGFXVbVww==" ;;
  0.171.0) INTEGRITY="sha512-l66NZkQgdk2C3pbcfULDz42yEUB581MVA6I+Y43Wp4OIqEy73HCdmZ0GTjeAHY2ycuH4N00d9VsLrwT1jxshTw==" ;;
  *) echo "fetch-codex: version $VERSION is not pinned here (known: 0.169.0 0.171.0)" >&2; exit 2 ;;
esac
PACKAGE="@openai/codex@${VERSION}-linux-x64"
CACHE="${UNIFIED_EXEC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/unified_exec}/codex-${VERSION}"
BIN="$CACHE/package/vendor/x86_64-unknown-linux-musl/bin/codex"

die() { echo "fetch-codex: $*" >&2; exit 1; }

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  die "only the linux x86_64 build is pinned here (this is $(uname -s)-$(uname -m))"
fi

if [ -x "$BIN" ] && [ -f "$CACHE/.verified" ]; then
  echo "$BIN"
  exit 0
fi

command -v npm >/dev/null || die "npm is needed to fetch $PACKAGE (install Node.js/npm)"
mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null 2>"$tmp/npm.log" ) \
  || die "npm pack $PACKAGE failed: $(tail -n 5 "$tmp/npm.log")"
tgz="$(ls "$tmp"/*.tgz 2>/dev/null | head -n 1)"
[ -n "$tgz" ] || die "npm pack produced no tarball"
actual="sha512-$(python3 -c 'import base64, hashlib, sys
with open(sys.argv[1], "rb") as f:
    print(base64.b64encode(hashlib.file_digest(f, "sha512").digest()).decode())' "$tgz")"
[ "$actual" = "$INTEGRITY" ] || die "integrity mismatch for $PACKAGE: got $actual"
rm -rf "$CACHE/package"
tar -xzf "$tgz" -C "$CACHE" package/vendor/x86_64-unknown-linux-musl/bin/codex package/package.json
[ -x "$BIN" ] || die "the tarball has no $BIN"
"$BIN" --version >/dev/null 2>&1 || die "$BIN does not run here"
touch "$CACHE/.verified"
echo "$BIN"
