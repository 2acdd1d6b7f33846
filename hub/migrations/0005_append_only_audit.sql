-- Tongbu hub schema v5: the audit log and the violation reviews are append-only. Who did what,
-- when and why must survive anyone with write access to the database through the hub's own
-- code paths; a correction is a new entry, never an edit.
-- Never edit this file once shipped: add 0006_*.sql.

CREATE TRIGGER audit_log_is_append_only_update
BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_is_append_only_delete
BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER violation_reviews_are_append_only_update
BEFORE UPDATE ON violation_reviews
BEGIN
    SELECT RAISE(ABORT, 'violation reviews are append-only: add a new review');
END;

CREATE TRIGGER violation_reviews_are_append_only_delete
BEFORE DELETE ON violation_reviews
BEGIN
    SELECT RAISE(ABORT, 'violation reviews are append-only: add a new review');
END;
