-- Schema 3: the agent's key history, for key rotation. A shipped migration is never edited:
-- add 0004_*.sql instead.
--
-- key_history: each key this agent replaced, with the last seq it signed (`last_seq`): envelopes
--   up to it verify with that key, later ones with the next key (the current one is
--   `agent.key`). `state` is 'pending' while the hub has not yet confirmed the rotation (the new
--   key waits in `agent.key.new`), 'retired' once it has. At most one row is pending.

CREATE TABLE key_history (
    public_key BLOB    PRIMARY KEY CHECK (length(public_key) = 32),
    last_seq   INTEGER NOT NULL CHECK (last_seq >= 0),
    state      TEXT    NOT NULL CHECK (state IN ('pending', 'retired')),
    at_ms      INTEGER NOT NULL
);

CREATE UNIQUE INDEX key_history_one_pending ON key_history (state) WHERE state = 'pending';
