-- The seed's AIUsage model: one row per AI API call, for cost analytics.
CREATE TABLE IF NOT EXISTS ai_usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    operation VARCHAR(50),
    model VARCHAR(100),
    prompt_tokens INTEGER DEFAULT 0,
    completion_tokens INTEGER DEFAULT 0,
    total_tokens INTEGER DEFAULT 0,
    cost_dollars DOUBLE PRECISION,
    generation_id VARCHAR(100),
    latency_ms INTEGER
);
CREATE INDEX IF NOT EXISTS ix_ai_usage_user_id ON ai_usage (user_id);
CREATE INDEX IF NOT EXISTS ix_ai_usage_created_at ON ai_usage (created_at);
CREATE INDEX IF NOT EXISTS ix_ai_usage_operation ON ai_usage (operation);
