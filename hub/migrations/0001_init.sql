-- Tongbu hub schema v1: counties, enrollment tokens, agents and their chains, the immutable
-- envelope log, API keys, alerts, equivocation evidence and the admin audit log.
-- Times are Unix milliseconds (INTEGER); digests, keys and signatures are raw bytes (BLOB).
-- Never edit this file once shipped: add 0002_*.sql instead.

CREATE TABLE counties (
    code          TEXT    PRIMARY KEY CHECK (length(code) = 6),
    name          TEXT    NOT NULL CHECK (length(name) > 0),
    created_at_ms INTEGER NOT NULL
);

-- Only the SHA-256 of a token is stored; the token itself is shown once, when issued.
CREATE TABLE enroll_tokens (
    token_hash    BLOB    PRIMARY KEY CHECK (length(token_hash) = 32),
    county        TEXT    NOT NULL REFERENCES counties (code),
    expires_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER,
    used_by       TEXT,
    CHECK ((used_at_ms IS NULL) = (used_by IS NULL))
);

CREATE TABLE agents (
    agent_id          TEXT    PRIMARY KEY CHECK (length(agent_id) = 15),
    county            TEXT    NOT NULL REFERENCES counties (code),
    public_key        BLOB    NOT NULL UNIQUE CHECK (length(public_key) = 32),
    state             TEXT    NOT NULL DEFAULT 'active'
                              CHECK (state IN ('active', 'quarantined', 'revoked')),
    enrolled_at_ms    INTEGER NOT NULL,
    -- The hub's watermark: every envelope 1..=acked_seq is stored; head_hash is the hash of
    -- envelope acked_seq (32 zero bytes while acked_seq is 0).
    acked_seq         INTEGER NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),
    head_hash         BLOB    NOT NULL CHECK (length(head_hash) = 32),
    -- What the agent last reported about itself (heartbeat).
    reported_head_seq INTEGER NOT NULL DEFAULT 0 CHECK (reported_head_seq >= 0),
    queue_depth       INTEGER NOT NULL DEFAULT 0 CHECK (queue_depth >= 0),
    agent_version     TEXT,
    last_error        TEXT,
    last_seen_ms      INTEGER,
    hostname          TEXT
);

CREATE INDEX agents_by_county ON agents (county, agent_id);

-- Every envelope exactly as received, kept forever. `codes` is a JSON array of rule codes.
CREATE TABLE envelopes (
    agent_id       TEXT    NOT NULL REFERENCES agents (agent_id),
    seq            INTEGER NOT NULL CHECK (seq >= 1),
    prev           BLOB    NOT NULL CHECK (length(prev) = 32),
    body           BLOB    NOT NULL,
    sig            BLOB    NOT NULL CHECK (length(sig) = 64),
    hash           BLOB    NOT NULL CHECK (length(hash) = 32),
    received_at_ms INTEGER NOT NULL,
    outcome        TEXT    NOT NULL CHECK (outcome IN ('accepted', 'held', 'rejected')),
    codes          TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(codes)),
    PRIMARY KEY (agent_id, seq)
);

-- The signed part of an envelope never changes and no envelope is ever deleted; only the
-- hub's verdict (outcome, codes) may be revised later.
CREATE TRIGGER envelopes_signed_part_is_immutable
BEFORE UPDATE OF agent_id, seq, prev, body, sig, hash, received_at_ms ON envelopes
BEGIN
    SELECT RAISE(ABORT, 'envelopes are immutable');
END;

CREATE TRIGGER envelopes_are_never_deleted
BEFORE DELETE ON envelopes
BEGIN
    SELECT RAISE(ABORT, 'envelopes are never deleted');
END;

-- Only the SHA-256 of an API key is stored.
CREATE TABLE api_keys (
    key_hash      BLOB    PRIMARY KEY CHECK (length(key_hash) = 32),
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'operator')),
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

CREATE TABLE alerts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT    NOT NULL REFERENCES agents (agent_id),
    kind     TEXT    NOT NULL CHECK (kind IN ('equivocation')),
    seq      INTEGER,
    detail   TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL
);

-- Proof that an agent signed two histories: a JSON object holding both envelopes in their
-- wire form (`{"held": ..., "received": ...}`), or the received one and the expected prev.
CREATE TABLE equivocations (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT    NOT NULL REFERENCES agents (agent_id),
    seq      INTEGER NOT NULL,
    evidence TEXT    NOT NULL CHECK (json_valid(evidence)),
    at_ms    INTEGER NOT NULL
);

-- Who did what, for every admin action and enrollment.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    detail TEXT    NOT NULL
);
