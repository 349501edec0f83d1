-- Indexes that keep the relay's queries cheap however large the table grows.

-- The claim query walks due rows in id order. Only unfinished rows are in
-- this index, so its size follows the backlog, not the table.
CREATE INDEX IF NOT EXISTS outbox_unfinished_idx
    ON outbox (id)
    WHERE status IN ('pending', 'failed');

-- Per-key hold: "is there an earlier failed (or dead) row with this key?"
-- Failed and dead rows are few, so this index stays tiny.
CREATE INDEX IF NOT EXISTS outbox_held_keys_idx
    ON outbox (ordering_key, id)
    WHERE status IN ('failed', 'dead') AND ordering_key IS NOT NULL;

-- No index names published rows (sql/008): a row's published mark changes
-- its status, which the partial indexes' predicates name, so the mark is
-- never a HOT update and writes an entry in every index the new row version
-- belongs to. Retention and reconciliation walk the primary key instead.

-- Per-key order under concurrent producers: a claim asks, for each keyed
-- row, for the nearest earlier unfinished row of its key (one backward probe).
-- "Unfinished" is spelled differently here than in outbox_unfinished_idx on
-- purpose: the probe names this predicate, which does not imply that index's,
-- so the planner cannot answer the probe by walking outbox_unfinished_idx
-- backwards and filtering on the key. It did, on statistics taken before the
-- backlog (the partial indexes then look empty), at a cost that grows with
-- the backlog.
CREATE INDEX IF NOT EXISTS outbox_unfinished_keys_idx
    ON outbox (ordering_key, id)
    WHERE status NOT IN ('published', 'dead') AND ordering_key IS NOT NULL;

-- Dead rows, for the dead-rows gauge: few, so the index stays tiny.
CREATE INDEX IF NOT EXISTS outbox_dead_idx
    ON outbox (id)
    WHERE status = 'dead';
