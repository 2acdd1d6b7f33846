-- Tongbu hub schema v7: the transparency log. Every stored envelope is one leaf of an
-- append-only RFC 9162 Merkle tree, its index being its arrival - 1. `log_nodes` holds every
-- perfect, aligned subtree: (level, idx) covers leaves [idx << level, (idx + 1) << level);
-- level 0 holds the leaf hashes. `log_checkpoints` keeps every checkpoint the hub signed, as
-- the exact signed bytes, so it can show the same signature again and `audit verify` can
-- re-check them. Envelopes stored before this version are added to the log, in arrival order,
-- when the hub first opens the database. Rows are never changed or deleted.
-- Never edit this file once shipped: add 0008_*.sql.

CREATE TABLE log_nodes (
    level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    hash  BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE log_checkpoints (
    tree_size   INTEGER PRIMARY KEY CHECK (tree_size >= 1),
    root        BLOB    NOT NULL CHECK (length(root) = 32),
    hub_time_ms INTEGER NOT NULL,
    payload     TEXT    NOT NULL,
    sig         BLOB    NOT NULL CHECK (length(sig) = 64)
);

CREATE TRIGGER log_nodes_are_append_only_update
BEFORE UPDATE ON log_nodes
BEGIN
    SELECT RAISE(ABORT, 'the log is append-only');
END;

CREATE TRIGGER log_nodes_are_append_only_delete
BEFORE DELETE ON log_nodes
BEGIN
    SELECT RAISE(ABORT, 'the log is append-only');
END;

CREATE TRIGGER log_checkpoints_are_append_only_update
BEFORE UPDATE ON log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the log is append-only');
END;

CREATE TRIGGER log_checkpoints_are_append_only_delete
BEFORE DELETE ON log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the log is append-only');
END;
