-- Attachments (F11): the metadata of each uploaded file. The bytes are in the file store
-- (omni.attachments), content-addressed by file_key; several rows may share one file. A row is
-- pending (claimed_at NULL) until a message carries it; the clean-up job deletes pending rows
-- after a day, and every row of a conversation older than the retention period.
CREATE TABLE attachments (
    id              text PRIMARY KEY,
    conversation_id text NOT NULL REFERENCES conversations (id),
    uploaded_by     text NOT NULL,
    name            text NOT NULL,
    size            bigint NOT NULL CHECK (size > 0),
    content_type    text NOT NULL,
    file_key        text NOT NULL,
    created_at      timestamptz NOT NULL,
    claimed_at      timestamptz
);
CREATE INDEX attachments_conversation ON attachments (conversation_id);
CREATE INDEX attachments_file ON attachments (file_key);
CREATE INDEX attachments_pending ON attachments (created_at) WHERE claimed_at IS NULL;
