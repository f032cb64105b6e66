#!/usr/bin/env bash
# Builds the check, then runs it once per fixture under production limits, as the
# host would: fixtures/pass.toml must pass, warn.toml warn and fail.toml fail.
# HEALTHHOST names the host binary (default: healthhost on PATH).
set -euo pipefail
cd "$(dirname "$0")"
healthhost="${HEALTHHOST:-healthhost}"
if ! command -v "$healthhost" >/dev/null 2>&1; then
    echo "cannot run '$healthhost': put healthhost on PATH or set HEALTHHOST=/path/to/healthhost" >&2
    exit 3
fi

./build.sh

failed=0
for case in pass:0 warn:1 fail:2; do
    fixture="${case%%:*}" want="${case##*:}"
    got=0
    # Winch compiles several times faster than serve's Cranelift, under the same limits.
    "$healthhost" check {{name}}.wasm --grants {{name}}.toml --fixtures "fixtures/$fixture.toml" \
        --compiler winch || got=$?
    if [ "$got" != "$want" ]; then
        echo "FAILED: fixtures/$fixture.toml gave exit status $got, expected $want (0 pass, 1 warn, 2 fail, 3 could not run)" >&2
        failed=1
    fi
done
if [ "$failed" = 0 ]; then
    echo "ok: pass, warn and fail as expected"
fi
exit "$failed"
