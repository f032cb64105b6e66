// {{name}}: a healthhost check of a service's JSON status endpoint.
//
// It sends `GET url` and reads one field of the JSON answer:
//
// - pass  when the answer is 200 and the field equals `expected` in time;
// - warn  when it does, but took longer than `slow_ms`;
// - fail  otherwise: no answer (timeout, refused, ...), another status, a body that
//         is not JSON, or a field that is missing or differs.
//
// It also exports how long the request took as `{{name_snake}}_latency_seconds`.
//
// Settings (the grant file's `settings`, or `--set KEY=VALUE`):
// `url` (required), `field` (default "status"), `expected` (default "ok"),
// `slow_ms` (default 1000), `timeout_ms` (default 5000).
//
// Build: ./build.sh (or npm run build). Test: ./test.sh (or npm test).

import {
  SettingError, describe, fail, getJson, pass, setting, settingMs, settingUrl, warn,
} from './healthhost.js';

// The sample's name; the grant file must list it under `grants.metrics`.
const LATENCY = '{{name_snake}}_latency_seconds';

// The host calls this once per run and reads the report it returns.
export function check() {
  try {
    return run();
  } catch (error) {
    // A bad setting is the operator's to fix: report it as a failure. Any other
    // exception is a bug in the check: rethrown, the host reports the run as an
    // error ("trap", exit status 3), not as a failure; the message and stack trace
    // go to the host's log.
    if (error instanceof SettingError) return fail(error.message);
    throw error;
  }
}

function run() {
  const url = settingUrl('url', 'http://127.0.0.1:8080/status');
  const field = setting('field', 'status');
  const expected = setting('expected', 'ok');
  const slowMs = settingMs('slow_ms', 1000);
  const timeoutMs = settingMs('timeout_ms', 5000);

  const { response, error, latency } = getJson(url, timeoutMs, LATENCY);
  if (error) {
    // No answer at all (timeout, refused, origin not granted): nothing to time.
    return fail(describe(error));
  }
  if (response.status !== 200) {
    return fail(`Status ${response.status}`, [latency]);
  }

  let document;
  try {
    // The body is bytes (a Uint8Array).
    document = JSON.parse(new TextDecoder().decode(response.body));
  } catch {
    return fail('the answer is not JSON', [latency]);
  }
  const isObject = document !== null && typeof document === 'object' && !Array.isArray(document);
  const value = isObject && Object.hasOwn(document, field) ? document[field] : null;
  if (value === null) {
    return fail(`the answer has no field '${field}'`, [latency]);
  }

  // Compare as text: a JSON string as it is, anything else as JSON (true, 3).
  const actual = typeof value === 'string' ? value : JSON.stringify(value);
  if (actual !== expected) {
    return fail(`${field} is '${actual}', expected '${expected}'`, [latency]);
  }

  const elapsedMs = latency.value * 1000;
  if (elapsedMs > slowMs) {
    return warn(`slow: ${elapsedMs.toFixed(0)} ms (over ${slowMs} ms)`, [latency]);
  }
  return pass(`${field} is '${actual}'`, [latency]);
}
