#!/usr/bin/env bash
# Builds {{name}}.wasm, the component the host loads, with componentize-py.
set -euo pipefail
cd "$(dirname "$0")"

version=0.25.1   # the componentize-py this project was written for; any 0.25.x builds it
if ! command -v componentize-py >/dev/null 2>&1; then
    echo "componentize-py is not installed: pip install componentize-py==$version" >&2
    exit 1
fi
found="$(componentize-py --version | awk '{print $2}')"   # "componentize-py 0.25.1"
if [[ "${found%.*}" != "${version%.*}" ]]; then
    echo "componentize-py $found is installed, this project needs ${version%.*}.x:" \
        "pip install componentize-py==$version" >&2
    exit 1
fi

# -d wit: the host's contract; -w check: its world; app: the module (app.py) whose
# WitWorld class implements it. healthhost.py is found beside it.
componentize-py -q -d wit -w check componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
