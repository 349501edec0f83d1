-- Least-privilege roles (group roles, NOLOGIN). Grant them to login roles:
--   CREATE ROLE relay_login LOGIN PASSWORD '...' IN ROLE outbox_relay;
--   CREATE ROLE app_login   LOGIN PASSWORD '...' IN ROLE outbox_writer;
-- outbox_relay reads and marks rows, takes an advisory lock (needs no
-- grant) and, with retention on (OUTBOX_RETENTION, the default), deletes
-- published rows; it never inserts. outbox_writer only inserts.
-- `outbox-relay --check` names any privilege the settings need and lack.
-- sql/007 grants outbox_relay UPDATE of the dead-letter columns it adds.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        CREATE ROLE outbox_relay NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'outbox_writer') THEN
        CREATE ROLE outbox_writer NOLOGIN;
    END IF;
END
$$;

GRANT SELECT, UPDATE (status, attempts, next_attempt_at, last_error, published_at, stream_seq)
    ON outbox TO outbox_relay;
GRANT DELETE ON outbox TO outbox_relay; -- retention; not needed with OUTBOX_RETENTION=0
GRANT INSERT ON outbox TO outbox_writer;
GRANT USAGE ON SEQUENCE outbox_id_seq TO outbox_writer;
GRANT EXECUTE ON FUNCTION outbox_enqueue(text, jsonb, jsonb, text, text),
                          outbox_enqueue_bytes(text, bytea, jsonb, text, text)
    TO outbox_writer;
