-- Tongbu hub schema v3: the provincial console. Console users and their server-side sessions,
-- reviews of violations (the violation itself never changes), and an index of every stored
-- record by county, kind and entity id (and its parent's id), so the console can trace a
-- project from its budget line to its payments and evaluations with index reads.
-- Times are Unix milliseconds (INTEGER). Never edit this file once shipped: add 0004_*.sql.

CREATE TABLE users (
    username      TEXT    PRIMARY KEY CHECK (length(username) BETWEEN 1 AND 64),
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'operator')),
    -- An Argon2id PHC string (salt and parameters included).
    password_hash TEXT    NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at_ms INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

-- Only the SHA-256 of a session token is stored; the token lives in the browser's cookie.
CREATE TABLE sessions (
    token_hash    BLOB    PRIMARY KEY CHECK (length(token_hash) = 32),
    username      TEXT    NOT NULL REFERENCES users (username),
    csrf          TEXT    NOT NULL CHECK (length(csrf) >= 32),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);

CREATE INDEX sessions_by_user ON sessions (username);

-- An admin's review of a violation. Reviews are appended; the latest one is the status.
CREATE TABLE violation_reviews (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    violation_id INTEGER NOT NULL REFERENCES violations (id),
    status       TEXT    NOT NULL CHECK (status IN ('reviewed', 'resolved')),
    note         TEXT    NOT NULL CHECK (length(note) > 0),
    by_user      TEXT    NOT NULL,
    at_ms        INTEGER NOT NULL
);

CREATE INDEX violation_reviews_by_violation ON violation_reviews (violation_id, id);

-- Every stored envelope whose body names a record, by the entity it belongs to. `parent_id`
-- is a contract's budget line id, or a payment's or evaluation's contract id ('' for budget
-- lines). Filled by the trigger below in the transaction that stores the envelope.
CREATE TABLE record_index (
    county    TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    entity_id TEXT    NOT NULL,
    parent_id TEXT    NOT NULL,
    agent_id  TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (agent_id, seq),
    FOREIGN KEY (agent_id, seq) REFERENCES envelopes (agent_id, seq)
);

CREATE INDEX record_index_by_entity ON record_index (entity_id, county, kind);
CREATE INDEX record_index_by_parent ON record_index (county, parent_id, kind);

CREATE TRIGGER envelopes_fill_record_index
AFTER INSERT ON envelopes
WHEN json_valid(CAST(NEW.body AS TEXT))
BEGIN
    INSERT OR IGNORE INTO record_index (county, kind, entity_id, parent_id, agent_id, seq)
    SELECT b.county, b.kind, b.id, b.parent, NEW.agent_id, NEW.seq
    FROM (
        SELECT json_extract(CAST(NEW.body AS TEXT), '$.county') AS county,
               json_extract(CAST(NEW.body AS TEXT), '$.kind') AS kind,
               json_extract(CAST(NEW.body AS TEXT), '$.id') AS id,
               coalesce(json_extract(CAST(NEW.body AS TEXT), '$.budget_line_id'),
                        json_extract(CAST(NEW.body AS TEXT), '$.contract_id'), '') AS parent
    ) AS b
    WHERE typeof(b.county) = 'text' AND typeof(b.id) = 'text' AND typeof(b.parent) = 'text'
      AND b.kind IN ('budget_line', 'contract', 'payment', 'evaluation');
END;

-- Envelopes stored before this migration.
INSERT OR IGNORE INTO record_index (county, kind, entity_id, parent_id, agent_id, seq)
SELECT b.county, b.kind, b.id, b.parent, b.agent_id, b.seq
FROM (
    SELECT agent_id, seq,
           json_extract(CAST(body AS TEXT), '$.county') AS county,
           json_extract(CAST(body AS TEXT), '$.kind') AS kind,
           json_extract(CAST(body AS TEXT), '$.id') AS id,
           coalesce(json_extract(CAST(body AS TEXT), '$.budget_line_id'),
                    json_extract(CAST(body AS TEXT), '$.contract_id'), '') AS parent
    FROM envelopes
    WHERE json_valid(CAST(body AS TEXT))
) AS b
WHERE typeof(b.county) = 'text' AND typeof(b.id) = 'text' AND typeof(b.parent) = 'text'
  AND b.kind IN ('budget_line', 'contract', 'payment', 'evaluation');
