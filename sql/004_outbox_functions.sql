-- Helpers for applications and operators.

-- Enqueue a JSON event; the payload is the JSON text in UTF-8.
--   SELECT outbox_enqueue('orders.created', '{"id": 42}');
CREATE OR REPLACE FUNCTION outbox_enqueue(
    p_subject      text,
    p_payload      jsonb,
    p_headers      jsonb DEFAULT '{}',
    p_ordering_key text  DEFAULT NULL,
    p_event_id     text  DEFAULT NULL)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO outbox (subject, payload, headers, ordering_key, event_id)
    VALUES (p_subject, convert_to(p_payload::text, 'UTF8'), COALESCE(p_headers, '{}'),
            p_ordering_key, COALESCE(p_event_id, gen_random_uuid()::text))
    RETURNING id;
$$;

-- Enqueue raw bytes (protobuf, Avro, ...), published byte for byte.
CREATE OR REPLACE FUNCTION outbox_enqueue_bytes(
    p_subject      text,
    p_payload      bytea,
    p_headers      jsonb DEFAULT '{}',
    p_ordering_key text  DEFAULT NULL,
    p_event_id     text  DEFAULT NULL)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO outbox (subject, payload, headers, ordering_key, event_id)
    VALUES (p_subject, COALESCE(p_payload, '\x'::bytea), COALESCE(p_headers, '{}'),
            p_ordering_key, COALESCE(p_event_id, gen_random_uuid()::text))
    RETURNING id;
$$;

-- Put dead rows back to pending (all, or those whose id is in p_ids), with
-- their attempt count reset; last_error is kept for the record. Wakes the
-- relay. Returns how many rows were requeued.
CREATE OR REPLACE FUNCTION outbox_requeue_dead(p_ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE outbox
       SET status = 'pending', attempts = 0, next_attempt_at = NULL, dead_lettered_at = NULL
     WHERE status = 'dead'
       AND (p_ids IS NULL OR id = ANY (p_ids));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN n;
END;
$$;

-- Delete published rows older than the given age. Returns how many.
--   SELECT outbox_prune_published(interval '7 days');
-- One statement that reads the whole table (no index names published rows:
-- see sql/002) and holds its deleted rows until it commits: for a one-off
-- clean-up. The relay's retention (OUTBOX_RETENTION) prunes in small
-- windows of ids instead.
CREATE OR REPLACE FUNCTION outbox_prune_published(p_older_than interval)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM outbox
     WHERE status = 'published'
       AND published_at < now() - p_older_than;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
