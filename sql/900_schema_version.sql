-- The table's schema version, in its comment: `outbox-relay migrate` skips a
-- table already at this version and the relay checks it at start. Raise the
-- number with every change to sql/ (and keep this file last).

COMMENT ON TABLE outbox IS 'Transactional outbox relayed to NATS JetStream by outbox-relay; schema version 5';
