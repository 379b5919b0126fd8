-- Operators' pauses (issue 14), for the reports' paused time: who, why (a pause reason's id;
-- null when none was given), from when to when (null: still paused). `seen_at` is the last
-- instant the server knew the pause went on (its start, then a heartbeat while it is open):
-- a pause left open by a server that died is ended there at the next start-up.
CREATE TABLE pauses (
    id          bigserial PRIMARY KEY,
    operator_id integer NOT NULL,
    reason      text,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    seen_at     timestamptz NOT NULL,
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
-- The reports ask for the pauses overlapping a period: a range index answers that directly
-- (an open pause is unbounded above).
CREATE INDEX pauses_period ON pauses USING gist (tstzrange(started_at, ended_at, '[)'));
-- At most one open pause per operator; also how the open ones are found.
CREATE UNIQUE INDEX pauses_open ON pauses (operator_id) WHERE ended_at IS NULL;
