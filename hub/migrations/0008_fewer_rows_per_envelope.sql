-- Tongbu hub schema v8: fewer rows and less work per stored envelope (the ingest path).
--
-- 1. The console's `record_index` is filled by the hub's ingest code, which has the record
--    parsed already, instead of by a trigger that re-read every body with json_extract (and
--    made every envelope insert a multi-statement one). What goes into it does not change:
--    a body that is not a well-formed record is indexed by the same json_extract expression
--    as before, now run by the store for that body alone.
-- 2. The transparency log stores only perfect subtrees of level 4 and up (16 leaves and more):
--    leaf i is the envelope whose arrival is i + 1, so a leaf hash and a small subtree are
--    recomputed from the envelopes table when a proof or a root needs them (at most 15 leaves
--    for all the levels below 4 together). Rows below level 4 written by earlier versions stay
--    (the table is append-only) and `audit verify` still compares them. `log_head` holds the
--    number of leaves, which the level-0 rows used to give.
-- Never edit this file once shipped: add 0009_*.sql.

DROP TRIGGER envelopes_fill_record_index;

CREATE TABLE log_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL CHECK (size >= 0)
);

INSERT INTO log_head (id, size)
SELECT 1, coalesce(max(idx) + 1, 0) FROM log_nodes WHERE level = 0;

CREATE TRIGGER log_head_never_shrinks
BEFORE UPDATE ON log_head
WHEN NEW.size < OLD.size OR NEW.id IS NOT OLD.id
BEGIN
    SELECT RAISE(ABORT, 'the log is append-only');
END;

CREATE TRIGGER log_head_is_never_deleted
BEFORE DELETE ON log_head
BEGIN
    SELECT RAISE(ABORT, 'the log is append-only');
END;
