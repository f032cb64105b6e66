// Helpers for healthhost checks written in JavaScript.
//
// The host's contract is wit/plugin.wit; componentize-js exposes its imports as the
// modules 'healthhost:plugin/http@0.1.0', '.../sql@0.1.0', '.../config@0.1.0' and
// '.../log@0.1.0'. This module wraps the parts every check repeats:
//
// - building a report: pass, warn, fail, and sample for a measurement;
// - reading settings: setting, settingUrl, settingMs; a bad or missing value throws a
//   SettingError whose message names the setting and the value;
// - a timed HTTP request: getJson returns { response, error, latency }; describe turns
//   an error (no response) into a short message;
// - a timed SQL query: query, with plain JavaScript values in and out;
// - log, to write to the host's log.
//
// Shapes to know (componentize-js): a WIT enum is a string ('pass'); a variant is
// { tag: 'denied', val: 'http://x:80' } (no val for 'timeout'); list<u8> is a
// Uint8Array (but `instanceof Uint8Array` is false for the host's: use
// ArrayBuffer.isView); option<T> is the value or undefined; s64/u64 values arrive as
// BigInt; a result's error is thrown as a ComponentError whose .payload is the variant
// (and which is not `instanceof Error`).

import { send } from 'healthhost:plugin/http@0.1.0';
import { query as sqlQuery } from 'healthhost:plugin/sql@0.1.0';
import { get } from 'healthhost:plugin/config@0.1.0';
import { log as hostLog } from 'healthhost:plugin/log@0.1.0';

// --- Reports ---------------------------------------------------------------------

/** A passing report: the dependency works. */
export function pass(message, samples = []) {
  return { status: 'pass', message, samples };
}

/** A warning: the dependency works but needs attention. Still healthy. */
export function warn(message, samples = []) {
  return { status: 'warn', message, samples };
}

/** A failing report: the dependency is down or unusable. */
export function fail(message, samples = []) {
  return { status: 'fail', message, samples };
}

/**
 * One measurement. `name` must be granted in the grant file (grants.metrics);
 * `labels` is an object of bounded values (never ids, URLs or free text).
 */
export function sample(name, value, labels = {}) {
  return {
    name,
    labels: Object.entries(labels).map(([k, v]) => [String(k), String(v)]),
    value: Number(value),
  };
}

// --- Settings --------------------------------------------------------------------

/** A setting is missing or malformed; the message names it and its value. */
export class SettingError extends Error {}

/** The setting `key` as a string, or `fallback` when it is not set. */
export function setting(key, fallback = undefined) {
  const value = get(key);
  return value === undefined ? fallback : value;
}

/**
 * The setting `key`, which must be set, as an http(s) URL. `example` shows the
 * operator what is expected.
 */
export function settingUrl(key, example) {
  const url = get(key);
  if (url === undefined) {
    throw new SettingError(`setting ${key} is not set (expected a URL like ${example})`);
  }
  if (!url.startsWith('http://') && !url.startsWith('https://')) {
    throw new SettingError(`invalid setting ${key} = '${url}' (expected a URL like ${example})`);
  }
  return url;
}

/** The setting `key` as a whole number of milliseconds, or `fallback`. */
export function settingMs(key, fallback) {
  const raw = get(key);
  if (raw === undefined) return fallback;
  if (!/^\s*\d+\s*$/.test(raw)) {
    throw new SettingError(
      `invalid setting ${key} = '${raw}' (expected milliseconds, e.g. ${fallback})`,
    );
  }
  return Number(raw);
}

// --- HTTP ------------------------------------------------------------------------

/**
 * Sends `GET url` asking for JSON, and times it. Returns { response, error, latency }:
 * `response` ({ status, headers, body: Uint8Array }) when an answer came, otherwise
 * `error`, the host's reason (see describe); `latency` is a sample named
 * `latencyName` with the seconds it took.
 */
export function getJson(url, timeoutMs, latencyName) {
  const request = {
    method: 'GET',
    url,
    headers: [['accept', 'application/json']],
    body: undefined,
    timeoutMs: Math.min(timeoutMs, 2 ** 32 - 1), // a u32 in the contract
  };
  const started = performance.now();
  let response;
  let error;
  try {
    response = send(request);
  } catch (e) {
    if (e?.payload === undefined) throw e; // not the host's answer: a bug
    error = e.payload; // e.g. { tag: 'timeout' }
  }
  const latency = sample(latencyName, (performance.now() - started) / 1000);
  return { response, error, latency };
}

// --- SQL -------------------------------------------------------------------------

/**
 * Runs one read-only statement on a granted datasource, and times it.
 * `params` are plain values (null, boolean, number, bigint, string, Uint8Array) for
 * the `?` (SQLite, MySQL) or `$1` (PostgreSQL) placeholders; a whole number goes as an
 * integer. Returns { rows, error, latency }: `rows` is an array of objects from column
 * name to plain value (integers as numbers, or BigInt past 2^53), or `error`.
 */
export function query(datasource, statement, params, latencyName) {
  const values = params.map(toSql);
  const started = performance.now();
  let rows;
  let error;
  try {
    const found = sqlQuery(datasource, statement, values);
    rows = found.rows.map((row) =>
      Object.fromEntries(found.columns.map((column, i) => [column, fromSql(row[i])])),
    );
  } catch (e) {
    if (e?.payload === undefined) throw e;
    error = { ...e.payload, sql: true }; // so describe() words it for a query
  }
  const latency = sample(latencyName, (performance.now() - started) / 1000);
  return { rows, error, latency };
}

function toSql(value) {
  if (value === null || value === undefined) return { tag: 'null' };
  if (typeof value === 'boolean') return { tag: 'boolean', val: value };
  if (typeof value === 'bigint') return { tag: 'integer', val: value };
  if (typeof value === 'number') {
    return Number.isInteger(value) ? { tag: 'integer', val: value } : { tag: 'real', val: value };
  }
  if (typeof value === 'string') return { tag: 'text', val: value };
  // Not `instanceof Uint8Array`: byte arrays from the host fail that test.
  if (ArrayBuffer.isView(value)) return { tag: 'blob', val: value };
  throw new TypeError(`cannot pass ${typeof value} as an SQL parameter`);
}

function fromSql(value) {
  if (value.tag === 'null') return null;
  if (value.tag === 'integer') {
    const n = Number(value.val);
    return Number.isSafeInteger(n) ? n : value.val;
  }
  return value.val;
}

// --- Errors and logging ------------------------------------------------------------

/**
 * A short message for an HTTP request or SQL query that got no answer: "Timeout",
 * "origin X not granted", "response too large", "datasource 'X' not granted",
 * "result too large", or the host's text (transport, driver).
 */
export function describe(error) {
  switch (error.tag) {
    case 'timeout':
      return 'Timeout';
    case 'denied':
      if (!error.sql) return `origin ${error.val} not granted`;
      // "NAME: why the statement was refused", or just the datasource's name
      return error.val.includes(':')
        ? `datasource ${error.val}`
        : `datasource '${error.val}' not granted`;
    case 'not-configured':
      return `datasource '${error.val}' not configured`;
    case 'too-large':
      return error.sql ? 'result too large' : 'response too large';
    default: // transport, invalid (HTTP); database (SQL): the host's own text
      return String(error.val);
  }
}

/** Writes one line to the host's log (level: trace, debug, info, warn, error). */
export function log(message, level = 'info') {
  hostLog(level, message);
}
