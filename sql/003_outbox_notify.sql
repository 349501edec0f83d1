-- Wake-up hint: one NOTIFY per INSERT statement (not per row). PostgreSQL
-- also folds identical notifications within one transaction, so a burst of
-- inserts costs one notification. The relay treats it as a hint only and
-- also polls, so a lost notification delays but never loses a row.

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(COALESCE(TG_ARGV[0], 'outbox'), '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS outbox_notify_insert ON outbox;
CREATE TRIGGER outbox_notify_insert
    AFTER INSERT ON outbox
    FOR EACH STATEMENT
    EXECUTE FUNCTION outbox_notify('outbox');
