-- The seed's AIUsage model: one row per AI API call, for cost analytics.
-- MySQL has no CREATE INDEX IF NOT EXISTS, so the indexes are part of the table.
CREATE TABLE IF NOT EXISTS ai_usage (
    id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id INTEGER NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    operation VARCHAR(50),
    model VARCHAR(100),
    prompt_tokens INTEGER DEFAULT 0,
    completion_tokens INTEGER DEFAULT 0,
    total_tokens INTEGER DEFAULT 0,
    cost_dollars DOUBLE,
    generation_id VARCHAR(100),
    latency_ms INTEGER,
    INDEX ix_ai_usage_user_id (user_id),
    INDEX ix_ai_usage_created_at (created_at),
    INDEX ix_ai_usage_operation (operation)
);
