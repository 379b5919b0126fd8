-- Outbox retention: items sent or failed (parked) longer ago than `[server.outbox]
-- retention_days` are deleted, with their attempts (ON DELETE CASCADE), oldest first, in
-- batches. This index finds them without reading the whole outbox.
CREATE INDEX outbox_finished ON outbox ((coalesce(sent_at, failed_at)), id)
    WHERE sent_at IS NOT NULL OR failed_at IS NOT NULL;
