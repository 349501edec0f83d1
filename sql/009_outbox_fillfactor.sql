-- Half of each heap page is left free by inserts, for the relay's marks.
--
-- A mark changes `status`, which the partial indexes name, so PostgreSQL
-- never updates an outbox row in place (HOT): it writes a new version of the
-- row. On the row's own page that version is logged as the few bytes that
-- changed; on another page it is logged whole, with both pages. The relay
-- marks many rows of a page in one statement (a drain; gathered marks in a
-- steady flow), and the old versions it replaces are only reclaimed after
-- that statement, so the page needs room for a new version of every row on
-- it: a fillfactor of 50. Replayed with the relay's statements (256 B rows,
-- batches of 20 to 500 rows), this roughly halves the WAL of a mark (about
-- 180 B per row instead of 300-600 B, and 636 instead of 998 B in a drain
-- after a checkpoint). The heap after the marks is about as large as with
-- the default of 100: there, the new versions fill other pages instead.
--
-- Only pages filled from now on follow it; rows already in the table keep
-- their pages. The lock it takes (SHARE UPDATE EXCLUSIVE) blocks no insert.
-- A partitioned table has no pages of its own and takes no fillfactor: each
-- of its partitions gets it instead (a partition created later needs
-- `WITH (fillfactor = 50)`). The table is found through its row type, as a
-- name in quotes here would be rewritten for another table by `migrate`.
-- Re-applying this file is a no-op.
DO $$
DECLARE
    tbl regclass := (SELECT typrelid FROM pg_type WHERE oid = pg_typeof(NULL::outbox));
    part regclass;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = tbl) = 'p' THEN
        FOR part IN SELECT relid FROM pg_partition_tree(tbl) WHERE isleaf LOOP
            EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', part);
        END LOOP;
    ELSE
        ALTER TABLE outbox SET (fillfactor = 50);
    END IF;
END
$$;
