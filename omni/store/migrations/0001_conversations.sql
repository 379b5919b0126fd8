-- Conversations, their events and surveys; ticket counters.
CREATE TABLE tickets (
    year integer PRIMARY KEY,
    last integer NOT NULL
);

CREATE TABLE conversations (
    id             text PRIMARY KEY,
    ticket         text NOT NULL UNIQUE,
    service_id     integer NOT NULL,
    token_hash     text NOT NULL UNIQUE,
    visitor        jsonb NOT NULL,
    status         text NOT NULL,
    group_id       integer,
    operator_id    integer,
    operator_name  text,
    offered_to     integer,
    ended_by       text,
    grace_pending  boolean NOT NULL DEFAULT false,
    waiting_since  double precision NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_open ON conversations (status) WHERE status NOT IN ('closed', 'abandoned');
CREATE INDEX conversations_created ON conversations (created_at);

CREATE TABLE events (
    conversation_id text NOT NULL REFERENCES conversations (id),
    seq             integer NOT NULL,
    kind            text NOT NULL,
    audience        text NOT NULL,
    author_key      text,
    client_id       text,
    -- json, not jsonb: the frame is kept as the exact text delivered, and replayed as is.
    frame           json NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
-- A client_id is stored once per author and conversation: idempotent sends, enforced.
CREATE UNIQUE INDEX events_client_id ON events (conversation_id, author_key, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE surveys (
    conversation_id text PRIMARY KEY REFERENCES conversations (id),
    answers         jsonb,
    skipped         boolean NOT NULL,
    answered_at     timestamptz NOT NULL DEFAULT now()
);
