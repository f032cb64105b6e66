-- Check results, appended in batches by every host (replica) that writes history: one
-- row per recorded run. at_ms is the run's end in Unix milliseconds; message is the
-- run's own message, scrubbed and capped as /health shows it.
CREATE TABLE hh_result (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    check_name VARCHAR(255) NOT NULL,
    node VARCHAR(255) NOT NULL,
    at_ms BIGINT NOT NULL,
    outcome VARCHAR(32) NOT NULL,
    latency_ms DOUBLE,
    message TEXT,
    INDEX hh_result_check_at (check_name, at_ms),
    INDEX hh_result_at (at_ms),
    -- One result per check, node and millisecond: a batch retried after its answer
    -- was lost (the connection cut mid-write) inserts nothing twice.
    UNIQUE INDEX hh_result_once (check_name, node, at_ms)
);
