-- Tongbu hub schema v2: the in-step ledger. Signed policy versions, the entities the rules
-- know, ledger totals per county × fiscal year × catalogue code, the held set, violations
-- and the feed of outcomes that changed after a record's first decision.
-- Times are Unix milliseconds (INTEGER). Never edit this file once shipped: add 0003_*.sql.

-- The hub's verdict on an envelope now also carries the findings' sentences and the policy
-- version it was judged by; `arrival` numbers envelopes across all agents in the order the hub
-- stored them (held records are re-checked in this order). Envelopes stored before this
-- migration get their arrival when the hub first opens and judges them.
ALTER TABLE envelopes ADD COLUMN detail TEXT;
ALTER TABLE envelopes ADD COLUMN policy_version INTEGER CHECK (policy_version >= 1);
ALTER TABLE envelopes ADD COLUMN arrival INTEGER CHECK (arrival >= 1);

-- Unique among the envelopes that have one (SQLite treats NULLs as distinct).
CREATE UNIQUE INDEX envelopes_by_arrival ON envelopes (arrival);
CREATE INDEX envelopes_to_judge ON envelopes (received_at_ms, agent_id, seq)
    WHERE arrival IS NULL;

-- The verdict (outcome, codes, detail, policy_version) may be revised when a held record is
-- decided: 0001's trigger guards only the signed part, so it lets these new columns change.
-- An arrival, once given, never changes.
CREATE TRIGGER envelopes_arrival_is_immutable
BEFORE UPDATE OF arrival ON envelopes
WHEN OLD.arrival IS NOT NULL AND NEW.arrival IS NOT OLD.arrival
BEGIN
    SELECT RAISE(ABORT, 'an envelope''s arrival never changes');
END;

-- Every policy version, kept forever: `payload` is the exact JSON the hub signed (a
-- PolicyBundle), `sig` its Ed25519 signature under the policy domain. The hub never changes a
-- version (and caches each one); bytes altered behind its back fail the agents' signature
-- check.
CREATE TABLE policies (
    version       INTEGER PRIMARY KEY CHECK (version >= 1),
    payload       BLOB    NOT NULL CHECK (length(payload) > 0),
    sig           BLOB    NOT NULL CHECK (length(sig) = 64),
    created_at_ms INTEGER NOT NULL,
    actor         TEXT    NOT NULL
);

CREATE TRIGGER policies_are_never_deleted
BEFORE DELETE ON policies
BEGIN
    SELECT RAISE(ABORT, 'policy versions are never deleted');
END;

-- What the rules know about each entity (the shared `Entity`, as JSON): every decided
-- revision, the accepted current one, and what accepted children commit on it.
CREATE TABLE entities (
    county TEXT NOT NULL CHECK (length(county) = 6),
    kind   TEXT NOT NULL CHECK (kind IN ('budget_line', 'contract', 'payment', 'evaluation')),
    id     TEXT NOT NULL CHECK (length(id) BETWEEN 1 AND 64),
    state  TEXT NOT NULL CHECK (json_valid(state)),
    PRIMARY KEY (county, kind, id)
) WITHOUT ROWID;

-- Totals per county, fiscal year and catalogue code ('' when unknown), kept incrementally as
-- records are decided. Amounts in fen; counts of records.
CREATE TABLE ledger (
    county              TEXT    NOT NULL CHECK (length(county) = 6),
    fiscal_year         INTEGER NOT NULL,
    catalogue_code      TEXT    NOT NULL,
    budget_approved_fen INTEGER NOT NULL DEFAULT 0 CHECK (budget_approved_fen >= 0),
    contracted_fen      INTEGER NOT NULL DEFAULT 0 CHECK (contracted_fen >= 0),
    paid_fen            INTEGER NOT NULL DEFAULT 0 CHECK (paid_fen >= 0),
    accepted            INTEGER NOT NULL DEFAULT 0 CHECK (accepted >= 0),
    held                INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    rejected            INTEGER NOT NULL DEFAULT 0 CHECK (rejected >= 0),
    PRIMARY KEY (county, fiscal_year, catalogue_code)
) WITHOUT ROWID;

-- Records waiting for their budget line or contract. The record itself is its envelope's
-- body; `held_year` / `held_catalogue` name the ledger row it counts in as held.
CREATE TABLE held (
    arrival        INTEGER PRIMARY KEY,
    agent_id       TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    waits_county   TEXT    NOT NULL,
    waits_kind     TEXT    NOT NULL
                           CHECK (waits_kind IN ('budget_line', 'contract', 'payment', 'evaluation')),
    waits_id       TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    policy_version INTEGER NOT NULL CHECK (policy_version >= 1),
    held_year      INTEGER NOT NULL,
    held_catalogue TEXT    NOT NULL,
    UNIQUE (agent_id, seq),
    FOREIGN KEY (agent_id, seq) REFERENCES envelopes (agent_id, seq)
);

CREATE INDEX held_by_waits ON held (waits_county, waits_kind, waits_id, arrival);
CREATE INDEX held_by_received ON held (received_at_ms, arrival);

-- One row per rejecting or warning rule code of a decided record. `kind` and `entity_id` are
-- '' for a body that is not a well-formed record (MALFORMED_RECORD), whose fiscal year is
-- unknown (NULL).
CREATE TABLE violations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    arrival     INTEGER NOT NULL,
    county      TEXT    NOT NULL CHECK (length(county) = 6),
    fiscal_year INTEGER,
    kind        TEXT    NOT NULL,
    entity_id   TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    FOREIGN KEY (agent_id, seq) REFERENCES envelopes (agent_id, seq)
);

CREATE INDEX violations_by_county ON violations (county, arrival, id);
CREATE INDEX violations_by_rule ON violations (rule, county, arrival, id);

-- The feed of outcomes that changed after a record's first decision (a held record accepted
-- or rejected). Agents read their own rows after the cursor they last recorded.
CREATE TABLE outcome_changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    FOREIGN KEY (agent_id, seq) REFERENCES envelopes (agent_id, seq)
);

CREATE INDEX outcome_changes_by_agent ON outcome_changes (agent_id, id);
