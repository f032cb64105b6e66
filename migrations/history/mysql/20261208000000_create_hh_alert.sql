-- Alerting's episodes: per rule and check, the current or last episode. An episode
-- opens and closes by conditional updates of this one row (is_open 0 -> 1 only when
-- the failures began after the last close; 1 -> 0 only when the recovery began after
-- the open), so however many replicas see a transition, one records it; seq numbers
-- the episodes and makes each one's key (rule/check/seq) stable for deliveries.
-- Times are Unix milliseconds; since_ms is the episode's first non-up result.
CREATE TABLE hh_episode (
    rule_name VARCHAR(255) NOT NULL,
    check_name VARCHAR(255) NOT NULL,
    seq BIGINT NOT NULL,
    is_open BIGINT NOT NULL,
    since_ms BIGINT NOT NULL,
    opened_ms BIGINT NOT NULL,
    closed_ms BIGINT NOT NULL,
    reminded_ms BIGINT NOT NULL,
    outcome VARCHAR(255),
    message TEXT,
    node VARCHAR(255),
    PRIMARY KEY (rule_name, check_name)
);
-- The outbox: one row per notification and channel, written in the transaction that
-- opens, reminds of or closes an episode. The replica holding a channel's lease
-- (hh_lease) delivers its rows in id order; rows sent together share batch (the first
-- row's id), which stays the same on every retry, so a receiver sees one delivery id.
-- state: pending, sent or failed (given up, or refused for good).
CREATE TABLE hh_outbox (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    channel VARCHAR(255) NOT NULL,
    rule_name VARCHAR(255) NOT NULL,
    check_name VARCHAR(255) NOT NULL,
    seq BIGINT NOT NULL,
    kind VARCHAR(255) NOT NULL,
    since_ms BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    due_ms BIGINT NOT NULL,
    outcome VARCHAR(255),
    message TEXT,
    node VARCHAR(255) NOT NULL,
    batch BIGINT,
    attempts BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    state VARCHAR(255) NOT NULL,
    done_ms BIGINT,
    answer TEXT
);
CREATE INDEX hh_outbox_queue ON hh_outbox (channel, state, id);
CREATE INDEX hh_outbox_done ON hh_outbox (done_ms);
-- Leases: which node does a job that one node at a time may do (deliver a channel's
-- outbox), until when. Taken and renewed by conditional updates.
CREATE TABLE hh_lease (
    name VARCHAR(255) PRIMARY KEY,
    holder VARCHAR(255) NOT NULL,
    until_ms BIGINT NOT NULL
);
