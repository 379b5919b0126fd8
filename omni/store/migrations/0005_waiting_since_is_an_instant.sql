-- One representation of time (docs/decisions.md): the moment a visitor began waiting is an
-- instant like every other time of a conversation, not POSIX seconds in a float.
ALTER TABLE conversations
    ALTER COLUMN waiting_since TYPE timestamptz USING to_timestamp(waiting_since);
