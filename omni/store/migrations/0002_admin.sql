-- The admin API: configuration as stored resources, an audit log, report timestamps.
ALTER TABLE conversations
    ADD COLUMN answered_at timestamptz,
    ADD COLUMN ended_at timestamptz,
    ADD COLUMN arrived_out_of_hours boolean NOT NULL DEFAULT false;
CREATE INDEX conversations_service_created ON conversations (service_id, created_at);

CREATE TABLE config_items (
    kind       text NOT NULL,
    key        text NOT NULL,
    body       jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);

CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    kind   text NOT NULL,
    key    text NOT NULL,
    before jsonb,
    after  jsonb
);
