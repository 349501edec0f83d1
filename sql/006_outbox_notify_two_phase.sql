-- Two-phase commit: PostgreSQL refuses PREPARE TRANSACTION to a transaction
-- that has notified, and a trigger cannot know whether its transaction will
-- be prepared. So where the server allows prepared transactions
-- (max_prepared_transactions > 0) the trigger never notifies; the relay
-- never sleeps there either, and finds rows by polling its tail. Elsewhere
-- the wake-up hint is as in 003.

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('max_prepared_transactions')::int = 0
       AND NOT pg_try_advisory_xact_lock_shared(1869574266, TG_RELID::int4) THEN
        PERFORM pg_notify(COALESCE(TG_ARGV[0], 'outbox'), '');
    END IF;
    RETURN NULL;
END;
$$;
