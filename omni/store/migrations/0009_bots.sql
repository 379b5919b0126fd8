-- The chatbot (issue 16): a conversation's time with the service's bot — the script it runs
-- while in the `bot` status, then how it came out (handed off, finished by the bot, dropped at
-- a node): reports read it. Null for conversations that met no bot.
ALTER TABLE conversations ADD COLUMN bot jsonb;
