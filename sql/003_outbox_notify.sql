-- Wake-up hint: one NOTIFY per INSERT statement (not per row), and only
-- while the relay sleeps. NOTIFY takes a database-wide lock at commit and
-- holds it through the commit's flush, so notifying transactions commit one
-- at a time; a busy relay polls its tail instead, and producers pay nothing.
--
-- The relay holds a session advisory lock (class 1869574266, key the
-- table's oid) while it sleeps. Here the try for a shared transaction lock
-- on the same key fails exactly then, and the insert notifies. When it
-- succeeds the relay is awake (or absent), and the shared lock, held until
-- this transaction ends, keeps the relay from falling asleep before this
-- row is committed: the relay's last look before sleeping sees it. The
-- relay treats a notification as a hint only and also polls, so a lost one
-- delays but never loses a row.

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(1869574266, TG_RELID::int4) THEN
        PERFORM pg_notify(COALESCE(TG_ARGV[0], 'outbox'), '');
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS outbox_notify_insert ON outbox;
CREATE TRIGGER outbox_notify_insert
    AFTER INSERT ON outbox
    FOR EACH STATEMENT
    EXECUTE FUNCTION outbox_notify('outbox');
