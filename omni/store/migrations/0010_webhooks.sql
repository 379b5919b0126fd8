-- Outgoing webhooks (issue 17): the outbox carries them beside the e-mails. A webhook delivery
-- names its subscription (the webhook's id) and keeps the exact body it sends; deliveries of one
-- subscription and one conversation go in order (the oldest pending one first). Every attempt
-- (e-mails' too) is recorded: when, how long, the answer's status or the error.
ALTER TABLE outbox ADD COLUMN subscription text, ADD COLUMN body text;
-- The head of each subscription and conversation: the oldest pending delivery.
CREATE INDEX outbox_heads ON outbox (subscription, conversation_id, id)
    WHERE sent_at IS NULL AND failed_at IS NULL AND subscription IS NOT NULL;
-- A subscription's deliveries, newest first (the admin API).
CREATE INDEX outbox_subscription ON outbox (subscription, id) WHERE subscription IS NOT NULL;

CREATE TABLE outbox_attempts (
    id          bigserial PRIMARY KEY,
    item_id     bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    -- Seconds.
    duration    double precision NOT NULL,
    status_code integer,
    error       text
);
CREATE INDEX outbox_attempts_item ON outbox_attempts (item_id, id);
