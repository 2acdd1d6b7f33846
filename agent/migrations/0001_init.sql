-- The agent's outbox, schema 1. A shipped migration is never edited: add 0002_*.sql instead.
--
-- envelopes: this agent's hash chain, one row per signed record, seq 1.. without gaps. Rows
--   stay after the hub acknowledges them: the agent is the county's own copy of its records.
--   `body` holds the record's exact JSON bytes (what was signed); kind, record_id and rev are
--   copies for people and queries; outcome and codes are the hub's latest verdict.
-- sync_state: the single row saying how far the hub has acknowledged the chain.
-- meta: the enrollment (agent_id, county, county_name, hub_url, hub_public_key, enrolled_at).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE envelopes (
    seq           INTEGER PRIMARY KEY,
    prev          BLOB NOT NULL,
    hash          BLOB NOT NULL,
    body          BLOB NOT NULL,
    sig           BLOB NOT NULL,
    kind          TEXT,
    record_id     TEXT,
    rev           INTEGER,
    created_at_ms INTEGER,
    outcome       TEXT CHECK (outcome IN ('accepted', 'held', 'rejected')),
    codes         TEXT
);

CREATE INDEX envelopes_outcome ON envelopes (outcome) WHERE outcome IS NOT NULL;

CREATE TABLE sync_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    acked_seq       INTEGER NOT NULL,
    acked_hash      BLOB,
    last_sync_ms    INTEGER,
    last_error      TEXT,
    last_attempt_ms INTEGER
);

INSERT INTO sync_state (id, acked_seq) VALUES (1, 0);
