-- Messaging channels (issue 17): the channel a conversation came through — its kind and id in
-- the configuration — and who writes on it there (the platform's user or chat id, where the
-- replies go); all null for the WebChat.
ALTER TABLE conversations
    ADD COLUMN channel_kind text,
    ADD COLUMN channel_id text,
    ADD COLUMN channel_user text;
-- A channel user's open conversation, found when their next message arrives.
CREATE INDEX conversations_channel_user ON conversations (channel_id, channel_user, created_at)
    WHERE channel_id IS NOT NULL AND status NOT IN ('closed', 'abandoned');

-- The platform messages a channel took, by the platform's id: a delivery the platform repeats
-- (it retries until it gets a 200) is dropped, also after its conversation closed.
CREATE TABLE channel_inbound (
    channel_id      text NOT NULL,
    message_id      text NOT NULL,
    conversation_id text NOT NULL,
    received_at     timestamptz NOT NULL,
    PRIMARY KEY (channel_id, message_id)
);
