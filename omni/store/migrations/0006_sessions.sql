-- Sessions of people who sign in with a user name and a password (docs/security.md): the
-- SHA-256 of the session token (never the token), whose session it is, the generation of the
-- user it was opened in (raising the user's generation ends all their sessions) and when it
-- expires.
CREATE TABLE sessions (
    token_hash text PRIMARY KEY,
    user_id    text NOT NULL,
    generation integer NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
