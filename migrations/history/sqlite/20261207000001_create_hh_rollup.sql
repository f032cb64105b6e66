-- Per check and per minute, hour and day (grain 'm', 'h' or 'd'; bucket_ms: the
-- bucket's start in Unix milliseconds, UTC): runs by outcome (error: a timeout, trap,
-- out-of-fuel, memory or load error) and the latency distribution: count, sum, min,
-- max and counts per bucket (le_N: at most N ms and above the bucket before; le_inf:
-- the rest). Every replica adds its results to the same rows in the transaction
-- that writes them to hh_result, so the rows are the sums over all replicas.
CREATE TABLE hh_rollup (
    check_name TEXT NOT NULL,
    grain TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    pass INTEGER NOT NULL,
    warn INTEGER NOT NULL,
    fail INTEGER NOT NULL,
    error INTEGER NOT NULL,
    latency_count INTEGER NOT NULL,
    latency_sum REAL NOT NULL,
    latency_min REAL,
    latency_max REAL,
    le_1 INTEGER NOT NULL,
    le_5 INTEGER NOT NULL,
    le_10 INTEGER NOT NULL,
    le_25 INTEGER NOT NULL,
    le_50 INTEGER NOT NULL,
    le_100 INTEGER NOT NULL,
    le_250 INTEGER NOT NULL,
    le_500 INTEGER NOT NULL,
    le_1000 INTEGER NOT NULL,
    le_2500 INTEGER NOT NULL,
    le_10000 INTEGER NOT NULL,
    le_inf INTEGER NOT NULL,
    PRIMARY KEY (check_name, grain, bucket_ms)
);
-- Pruning finds a grain's old buckets without reading every check's.
CREATE INDEX hh_rollup_age ON hh_rollup (grain, bucket_ms);
