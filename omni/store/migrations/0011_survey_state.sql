-- The survey by link (issue 17): where a conversation's survey stands — 'pending' (offered,
-- waiting for an answer: in the page while the conversation is `ended`, then by link until its
-- deadline), 'answered', 'skipped' (declined by the visitor); null: none was offered. A closed
-- conversation whose survey is still pending may be answered once, by link.
ALTER TABLE conversations ADD COLUMN survey text
    CHECK (survey IN ('pending', 'answered', 'skipped'));
-- What earlier versions stored: a survey row is an answer, or a skip (a timeout was stored as a
-- skip too: those stay closed to a link); a conversation still `ended` waits for its survey.
UPDATE conversations SET survey = CASE WHEN s.skipped THEN 'skipped' ELSE 'answered' END
FROM surveys s WHERE s.conversation_id = conversations.id;
UPDATE conversations SET survey = 'pending' WHERE status = 'ended' AND survey IS NULL;
