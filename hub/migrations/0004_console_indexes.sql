-- Tongbu hub schema v4: an index for the console's violations list and export. Each violation
-- shows the current outcome of the envelope that broke the rule; looked up through the primary
-- key, that outcome costs a read of the envelope's page of the (large) envelope table, one
-- page per violation. This index holds the outcome beside the key, so the lookup stays in a
-- small index (a province's 160,000-violation export reads about 30 MB, not 400 MB).
-- Never edit this file once shipped: add 0005_*.sql.

CREATE INDEX envelopes_outcome ON envelopes (agent_id, seq, outcome);
