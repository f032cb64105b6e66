-- Check results, appended in batches by every host (replica) that writes history: one
-- row per recorded run. at_ms is the run's end in Unix milliseconds; message is the
-- run's own message, scrubbed and capped as /health shows it.
CREATE TABLE hh_result (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    check_name TEXT NOT NULL,
    node TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    latency_ms REAL,
    message TEXT
);
CREATE INDEX hh_result_check_at ON hh_result (check_name, at_ms);
-- One result per check, node and millisecond: a batch retried after its answer was
-- lost (the connection cut mid-write) inserts nothing twice.
CREATE UNIQUE INDEX hh_result_once ON hh_result (check_name, node, at_ms);
CREATE INDEX hh_result_at ON hh_result (at_ms);
