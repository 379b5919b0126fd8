-- Frames between nodes (issue 18, docs/scale-out.md "Any node accepts any client"): a client's
-- socket is held by one node (its edge) and served by the node that owns its conversation or
-- its operator's groups. `up` rows go from the edge to the serving node, `down` rows back;
-- `node` is the addressee, which consumes (deletes) them in `n` order after a notice on its
-- channel carrying the socket id. A binary message's body is its hex. Unlogged: they live for milliseconds, and a database crash
-- ends every socket anyway (clients resume; what was acknowledged is in the logged tables).
CREATE UNLOGGED TABLE relay (
    socket    text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('up', 'down')),
    n         bigint NOT NULL CHECK (n > 0),
    node      text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('open', 'frame', 'binary', 'close')),
    body      text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (socket, direction, n)
);
CREATE INDEX relay_node ON relay (node, direction);
CREATE INDEX relay_at ON relay (at);
