-- Dead letters: with OUTBOX_DEAD_LETTER_SUBJECT set, the leader publishes
-- each dead row to that subject and records it here. Re-applying this file
-- is a no-op.

ALTER TABLE outbox ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz;
-- Dead letters published for the row over its life: part of the dead
-- letter's Nats-Msg-Id, so a row that dies again after a requeue is not
-- dropped as a duplicate of its first death's dead letter.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS dead_letters integer NOT NULL DEFAULT 0;

COMMENT ON COLUMN outbox.dead_lettered_at IS 'When the row''s dead letter was stored (OUTBOX_DEAD_LETTER_SUBJECT); NULL: not (yet); cleared by a requeue';

-- Dead rows whose dead letter is still due: few, so the index stays tiny and
-- the leader's periodic look for them reads one index page when none are.
CREATE INDEX IF NOT EXISTS outbox_dead_letter_due_idx
    ON outbox (id)
    WHERE status = 'dead' AND dead_lettered_at IS NULL;

-- The relay's group role (sql/005, an example) records dead letters and its
-- requeue clears them.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        GRANT UPDATE (dead_lettered_at, dead_letters) ON outbox TO outbox_relay;
    END IF;
END
$$;
