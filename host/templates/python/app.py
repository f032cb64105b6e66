"""{{name}}: a healthhost check of a service's JSON status endpoint.

It sends `GET url` and reads one field of the JSON answer:

- pass  when the answer is 200 and the field equals `expected` in time;
- warn  when it does, but took longer than `slow_ms`;
- fail  otherwise: no answer (timeout, refused, ...), another status, a body that is
        not JSON, or a field that is missing or differs.

It also exports how long the request took as `{{name_snake}}_latency_seconds`.

Settings (the grant file's `settings`, or `--set KEY=VALUE`):
`url` (required), `field` (default "status"), `expected` (default "ok"),
`slow_ms` (default 1000), `timeout_ms` (default 5000).

Build: ./build.sh. Test: ./test.sh.
"""

import json

import wit_world
from componentize_py_types import Err
from healthhost import (
    SettingError, describe, fail, get_json, pass_, setting, setting_ms, setting_url, warn,
)

# The sample's name; the grant file must list it under `grants.metrics`.
LATENCY = "{{name_snake}}_latency_seconds"


class WitWorld(wit_world.WitWorld):
    """componentize-py looks for this class: the host calls `check` once per run."""

    def check(self):
        try:
            return run()
        except SettingError as error:
            # A bad setting is the operator's to fix: report it as a failure.
            # Any other exception is a bug in the check: the host reports the run
            # as an error ("trap", exit status 3), not as a failure; the traceback
            # goes to the host's log.
            return fail(str(error))


def run():
    url = setting_url("url", "http://127.0.0.1:8080/status")
    field = setting("field", "status")
    expected = setting("expected", "ok")
    slow_ms = setting_ms("slow_ms", 1000)
    timeout_ms = setting_ms("timeout_ms", 5000)

    result, latency = get_json(url, timeout_ms, LATENCY)
    if isinstance(result, Err):
        # No answer at all (timeout, refused, origin not granted): nothing to time.
        return fail(describe(result))
    response = result.value  # status, headers, body (bytes)
    if response.status != 200:
        return fail(f"Status {response.status}", [latency])

    try:
        document = json.loads(response.body)
    except ValueError:
        return fail("the answer is not JSON", [latency])
    value = document.get(field) if isinstance(document, dict) else None
    if value is None:
        return fail(f"the answer has no field '{field}'", [latency])

    # Compare as text: a JSON string as it is, anything else as JSON (true, 3).
    actual = value if isinstance(value, str) else json.dumps(value)
    if actual != expected:
        return fail(f"{field} is '{actual}', expected '{expected}'", [latency])

    elapsed_ms = latency.value * 1000
    if elapsed_ms > slow_ms:
        return warn(f"slow: {elapsed_ms:.0f} ms (over {slow_ms} ms)", [latency])
    return pass_(f"{field} is '{actual}'", [latency])
