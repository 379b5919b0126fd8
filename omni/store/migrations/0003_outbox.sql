-- The outbox (DESIGN §2): messages to deliver outside — e-mails — at least once. A row is
-- written before the request is acknowledged; the outbox worker sends it, retries it with
-- backoff, and marks it sent or, after too many attempts, failed.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL,
    -- One row per key: asking twice for the same thing queues it once.
    dedupe_key      text NOT NULL UNIQUE,
    conversation_id text REFERENCES conversations (id),
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    sent_at         timestamptz,
    failed_at       timestamptz,
    last_error      text
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_conversation ON outbox (conversation_id);
