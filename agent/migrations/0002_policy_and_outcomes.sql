-- Schema 2: the cached policy and the hub's outcomes as they change. A shipped migration is
-- never edited: add 0003_*.sql instead.
--
-- policy: every policy bundle this agent accepted from the hub, exactly as received: `payload`
--   holds the signed payload bytes and `sig` the hub's Ed25519 signature over them (domain
--   `tongbu/v1/policy`). Both are re-verified with the pinned hub key whenever they are loaded;
--   the newest version is the one in use. Rows are only ever added (a row that no longer
--   verifies may be replaced by the hub's copy of the same version).
-- envelopes.detail: the hub's sentences for the record's latest outcome (`codes` has the codes).
-- sync_state.outcome_cursor: the hub's position in this agent's outcome changes, recorded in
--   the same transaction as the receipt that carried them and sent back in every heartbeat.

CREATE TABLE policy (
    version       INTEGER PRIMARY KEY CHECK (version >= 1),
    payload       BLOB NOT NULL,
    sig           BLOB NOT NULL,
    fetched_at_ms INTEGER NOT NULL
);

ALTER TABLE envelopes ADD COLUMN detail TEXT;

ALTER TABLE sync_state ADD COLUMN outcome_cursor INTEGER NOT NULL DEFAULT 0 CHECK (outcome_cursor >= 0);
