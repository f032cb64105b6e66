#!/usr/bin/env bash
# Builds {{name}}.wasm, the component the host loads, with componentize-js.
set -euo pipefail
cd "$(dirname "$0")"

version=0.23.0   # the componentize-js package.json pins
for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool is not installed: install Node.js 20 or later" >&2
        exit 1
    fi
done
if [[ ! -d node_modules ]]; then
    npm install --no-audit --no-fund
fi
found="$(node -p 'require("./node_modules/@bytecodealliance/componentize-js/package.json").version' 2>/dev/null || echo none)"
if [[ "$found" != "$version" ]]; then
    echo "componentize-js $found is installed, this project needs $version:" \
        "rm -rf node_modules && npm install" >&2
    exit 1
fi

# --disable http fetch-event: no wasi:http import and no fetch handler export (the
# host has neither; requests go through its http import). stdio, random and clocks
# stay: console.error, Math.random and performance.now need them.
# healthhost.js is bundled in through check.js's import.
node_modules/.bin/componentize-js check.js --wit wit --world-name check \
    --disable http fetch-event --out {{name}}.wasm
echo "built {{name}}.wasm"
