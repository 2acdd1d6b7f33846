-- Schema 4: what this agent knows of the hub's transparency log. A shipped migration is never
-- edited: add 0005_*.sql instead.
--
-- hub_log: the last hub checkpoint this agent verified (one row at most): the tree size, the
--   root, the hub's time in it and when the agent checked it. The next receipt's checkpoint must
--   extend it (a consistency proof), or a finding is recorded.
-- hub_log_findings: every time the hub's log was caught shrinking, not extending what it showed
--   before, or not holding this agent's acknowledged head; kept as evidence, with the signed
--   checkpoint the hub showed (exact JSON) and the one the agent held. Never changed or deleted.

CREATE TABLE hub_log (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    tree_size   INTEGER NOT NULL CHECK (tree_size >= 0),
    root        BLOB    NOT NULL CHECK (length(root) = 32),
    hub_time_ms INTEGER NOT NULL,
    checked_ms  INTEGER NOT NULL
);

CREATE TABLE hub_log_findings (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    held_size  INTEGER,
    held_root  BLOB,
    shown      TEXT    NOT NULL
);

CREATE TRIGGER hub_log_findings_are_append_only_update
BEFORE UPDATE ON hub_log_findings
BEGIN
    SELECT RAISE(ABORT, 'findings are evidence and never change');
END;

CREATE TRIGGER hub_log_findings_are_append_only_delete
BEFORE DELETE ON hub_log_findings
BEGIN
    SELECT RAISE(ABORT, 'findings are evidence and never change');
END;
