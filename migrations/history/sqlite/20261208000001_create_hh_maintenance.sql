-- Maintenance windows made through POST /v1/maintenance (the config's own are not
-- stored): which checks (a JSON array of names or globs), from start_ms to end_ms
-- (Unix milliseconds, the end excluded; DELETE moves end_ms to the moment it ended).
-- Every replica reads them, so a window silences the alerts of all.
CREATE TABLE hh_maintenance (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    checks TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    reason TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX hh_maintenance_end ON hh_maintenance (end_ms);
