-- Tongbu hub schema v6: agent key history. When an agent rotates its key, the key it retires
-- is kept here with the range of seqs it signed (valid_from_seq..=valid_until_seq; the range
-- is empty when the key signed nothing) and the time it was in use, so envelopes it signed
-- still verify. `agents.public_key` stays the current key, valid from the seq after the last
-- retired key's range. Rows are never changed or deleted.
-- Never edit this file once shipped: add 0007_*.sql.

CREATE TABLE agent_keys (
    id              INTEGER PRIMARY KEY,
    agent_id        TEXT    NOT NULL REFERENCES agents (agent_id),
    public_key      BLOB    NOT NULL UNIQUE CHECK (length(public_key) = 32),
    valid_from_seq  INTEGER NOT NULL CHECK (valid_from_seq >= 1),
    valid_until_seq INTEGER NOT NULL CHECK (valid_until_seq >= valid_from_seq - 1),
    valid_from_ms   INTEGER NOT NULL,
    valid_until_ms  INTEGER NOT NULL CHECK (valid_until_ms >= valid_from_ms)
);

CREATE INDEX agent_keys_by_agent ON agent_keys (agent_id, valid_until_seq);

CREATE TRIGGER agent_keys_are_append_only_update
BEFORE UPDATE ON agent_keys
BEGIN
    SELECT RAISE(ABORT, 'agent key history is append-only');
END;

CREATE TRIGGER agent_keys_are_append_only_delete
BEFORE DELETE ON agent_keys
BEGIN
    SELECT RAISE(ABORT, 'agent key history is append-only');
END;
