-- The optional `status` field of POST /v1/ai-usage: 'success' or 'error'. NULL on rows
-- written before this column existed (or by other writers); reports count them as
-- successes.
ALTER TABLE ai_usage ADD COLUMN status VARCHAR(20);
