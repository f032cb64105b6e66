-- Per check and per minute, hour and day (grain 'm', 'h' or 'd'; bucket_ms: the
-- bucket's start in Unix milliseconds, UTC): runs by outcome (error: a timeout, trap,
-- out-of-fuel, memory or load error) and the latency distribution: count, sum, min,
-- max and counts per bucket (le_N: at most N ms and above the bucket before; le_inf:
-- the rest). Every replica adds its results to the same rows in the transaction
-- that writes them to hh_result, so the rows are the sums over all replicas.
CREATE TABLE hh_rollup (
    check_name TEXT NOT NULL,
    grain CHAR(1) NOT NULL,
    bucket_ms BIGINT NOT NULL,
    runs BIGINT NOT NULL,
    pass BIGINT NOT NULL,
    warn BIGINT NOT NULL,
    fail BIGINT NOT NULL,
    error BIGINT NOT NULL,
    latency_count BIGINT NOT NULL,
    latency_sum DOUBLE PRECISION NOT NULL,
    latency_min DOUBLE PRECISION,
    latency_max DOUBLE PRECISION,
    le_1 BIGINT NOT NULL,
    le_5 BIGINT NOT NULL,
    le_10 BIGINT NOT NULL,
    le_25 BIGINT NOT NULL,
    le_50 BIGINT NOT NULL,
    le_100 BIGINT NOT NULL,
    le_250 BIGINT NOT NULL,
    le_500 BIGINT NOT NULL,
    le_1000 BIGINT NOT NULL,
    le_2500 BIGINT NOT NULL,
    le_10000 BIGINT NOT NULL,
    le_inf BIGINT NOT NULL,
    PRIMARY KEY (check_name, grain, bucket_ms)
);
-- Pruning finds a grain's old buckets without reading every check's.
CREATE INDEX hh_rollup_age ON hh_rollup (grain, bucket_ms);
