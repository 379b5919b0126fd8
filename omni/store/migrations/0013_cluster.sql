-- More than one node (issue 18, DESIGN §11): PostgreSQL is the coordination engine.
--
-- nodes: every `omni serve` process registers under its name; `incarnation` counts its starts
-- (a process knows it still is that node while the row carries its incarnation). A node whose
-- heartbeat is older than the cluster's expiry is dead. Times are the database's clock.
CREATE TABLE nodes (
    name         text PRIMARY KEY,
    incarnation  bigint NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

-- leases: who owns a resource (`group:1`, `conversation:<id>`) until when. `epoch` grows on
-- every acquisition and is never reset — a released lease keeps its row with no owner — so a
-- write fenced by (resource, epoch) can tell a current owner from a former one. Times are the
-- database's clock (now()), never a node's: nodes' clocks may disagree.
CREATE TABLE leases (
    resource    text PRIMARY KEY,
    owner       text,
    epoch       bigint NOT NULL CHECK (epoch > 0),
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX leases_owner ON leases (owner) WHERE owner IS NOT NULL;

-- Outbox claims: a worker takes due items by claiming them until `claimed_until` (the
-- database's clock), so two workers never hold the same item and a dead worker's claim ends.
ALTER TABLE outbox ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz;
