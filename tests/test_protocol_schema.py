"""The published protocol (``/protocol.schema.json``) is the protocol: it admits every frame a
real session exchanges, in its direction; it lists exactly the frames docs/protocol.md
documents, with their fields; and every frame example in that document fits it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from omni.domain import protocol as p
from omni.server import RunningServer
from tests.support import TOK_ALICE, Client, connect_memory, open_memory_gateway

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
SCHEMA = p.json_schema()


def validator(direction: str) -> jsonschema.Draft202012Validator:
    """A validator of one direction's frames (the document's own ``$defs``)."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{direction}", "$defs": SCHEMA["$defs"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def frame_types(direction: str) -> set[str]:
    mapping: dict[str, str] = SCHEMA["$defs"][direction]["discriminator"]["mapping"]
    return set(mapping)


def frame_schema(direction: str, kind: str) -> dict[str, Any]:
    ref = SCHEMA["$defs"][direction]["discriminator"]["mapping"][kind]
    found: dict[str, Any] = SCHEMA["$defs"][ref.rpartition("/")[2]]
    return found


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert set(p.DIRECTIONS) <= set(SCHEMA["$defs"])


async def test_the_schema_is_served(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        r = await http.get("/protocol.schema.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/schema+json")
    assert r.json() == json.loads(json.dumps(SCHEMA))


def test_a_frame_of_another_direction_is_refused() -> None:
    """The directions are not interchangeable: each admits only its own frames."""
    offer = {"type": "offer", "conversation_id": "C1", "timeout": 30.0}
    assert not validator("server_to_visitor").is_valid(offer)
    assert not validator("visitor_to_server").is_valid({"type": "login", "token": "t"})
    assert validator("operator_to_server").is_valid({"type": "login", "token": "t"})
    assert not validator("operator_to_server").is_valid({"type": "login"})


# -- every frame of a whole session fits ---------------------------------------------------------


class Recorder:
    """A client whose every frame, sent or received, is kept with its direction."""

    def __init__(self, client: Client, side: str) -> None:
        self.client = client
        self.side = side
        self.frames: list[tuple[str, dict[str, Any]]] = []

    async def send(self, type: str, **fields: Any) -> None:
        self.frames.append((f"{self.side}_to_server", {"type": type, **fields}))
        await self.client.send(type, **fields)

    async def until(self, type: str) -> dict[str, Any]:
        while True:
            frame = await self.client.recv()
            self.frames.append((f"server_to_{self.side}", frame))
            if frame["type"] == type:
                return frame


async def test_every_frame_of_a_session_fits_its_direction() -> None:
    async with (
        open_memory_gateway() as gateway,
        connect_memory(gateway, "/ws/operator") as op_client,
        connect_memory(gateway, "/ws/visitor") as visitor_client,
    ):
        alice, vera = Recorder(op_client, "operator"), Recorder(visitor_client, "visitor")
        await alice.send("ping")
        await alice.until("pong")
        await alice.send("accept", conversation_id="nope")
        await alice.until("error")
        await alice.send("login", token=TOK_ALICE)
        await alice.until("welcome")
        await vera.send("message", client_id="early", text="hi")
        await vera.until("error")
        await vera.send(
            "start",
            service_id=25,
            visitor={"name": "Vera", "email": "vera@example.com", "fields": {"order": "A-1"}},
        )
        started = await vera.until("started")
        await vera.until("queued")
        await vera.send("message", client_id="v1", text="Hello? 😟")
        await vera.until("ack")
        await alice.send("status", status="available")
        offer = await alice.until("offer")
        conversation_id = offer["conversation_id"]
        await alice.send("accept", conversation_id=conversation_id)
        await alice.until("message")  # the greeting, after the history and `assigned`
        await vera.until("message")
        await alice.send("typing", conversation_id=conversation_id)
        await vera.until("typing")
        await vera.send("typing")
        await alice.until("typing")
        await alice.send("message", conversation_id=conversation_id, client_id="a1", text="Yes")
        await alice.until("ack")
        await vera.until("message")
        await alice.send("sync", conversation_id=conversation_id, last_seq=0)
        await alice.until("message")  # the replay: the history from seq 1
        await alice.send("folder", name="out_of_hours")
        await alice.until("folder")
        await alice.send("end", conversation_id=conversation_id)
        await alice.until("ended")
        await vera.until("survey")
        await vera.send("survey", answers={"rating": 9})
        await vera.until("error")
        await vera.send("survey", answers={"rating": 5, "comment": "quick"})
        await vera.until("closed")
        await alice.until("closed")
        async with connect_memory(gateway, "/ws/visitor") as again:
            vera_again = Recorder(again, "visitor")
            await vera_again.send("resume", token=started["token"], last_seq=0)
            await vera_again.until("closed")
            vera.frames += vera_again.frames
        # A visitor who arrives out of hours.
        async with connect_memory(gateway, "/ws/visitor") as late:
            olga = Recorder(late, "visitor")
            await olga.send("start", service_id=26, visitor={"name": "Olga"})
            await olga.until("out_of_hours")
            vera.frames += olga.frames
    frames = alice.frames + vera.frames
    seen = {(direction, frame["type"]) for direction, frame in frames}
    for direction, frame in frames:
        errors = sorted(validator(direction).iter_errors(frame), key=str)
        assert not errors, (direction, frame, [e.message for e in errors])
    # The session covered every kind of frame but a few rarer ones.
    assert {kind for d, kind in seen if d == "server_to_operator"} >= {
        "welcome", "status", "offer", "message", "assigned", "ack", "typing", "folder",
        "ended", "closed", "error", "pong",
    }  # fmt: skip
    assert {kind for d, kind in seen if d == "server_to_visitor"} >= {
        "started", "queued", "ack", "message", "assigned", "typing", "ended", "survey",
        "closed", "resumed", "out_of_hours", "error",
    }  # fmt: skip


# -- the document and the schema agree ------------------------------------------------------------

#: docs/protocol.md's table of each direction's frames.
SECTIONS = {
    "visitor_to_server": "### 4.1 Visitor → server",
    "server_to_visitor": "### 4.2 Server → visitor",
    "operator_to_server": "### 5.1 Operator → server",
    "server_to_operator": "### 5.2 Server → operator",
    "supervisor_to_server": "### 10.1 Supervisor → server",
    "server_to_supervisor": "### 10.2 Server → supervisor",
}


def documented(direction: str) -> dict[str, str]:
    """Frame type -> the "Fields" cell of its row, from the direction's table."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split(SECTIONS[direction], 1)[1].split("\n### ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`") or cells[0] == "`type`":
            continue
        for kind in re.findall(r"`(\w+)`", cells[0]):
            rows[kind] = cells[1]
    return rows


@pytest.mark.parametrize("direction", list(SECTIONS))
def test_the_document_lists_exactly_the_frames_of_the_schema(direction: str) -> None:
    assert set(documented(direction)) == frame_types(direction)


@pytest.mark.parametrize("direction", list(SECTIONS))
def test_the_document_names_every_field_of_every_frame(direction: str) -> None:
    missing = []
    for kind, fields in documented(direction).items():
        if fields.startswith("as in"):
            continue  # the row points at the section where the frame is described
        named = set(re.findall(r"`(\w+)", fields))
        for name in frame_schema(direction, kind)["properties"]:
            if name != "type" and name not in named:
                missing.append(f"{kind}.{name}")
    assert not missing, f"fields of {direction} frames missing from docs/protocol.md: {missing}"


def test_every_frame_example_of_the_document_fits_the_schema() -> None:
    """Each JSON example with a ``type`` in docs/protocol.md is a frame the schema admits."""
    text = DOCS.read_text(encoding="utf-8")
    examples = []
    for candidate in re.findall(r"\{\"type\": ?\"[^`]*?\}(?=`|\s*$|\s*\(|\s*\|)", text, re.M):
        try:
            examples.append(json.loads(candidate))
        except json.JSONDecodeError:
            continue
    assert len(examples) > 60
    everything = jsonschema.Draft202012Validator(SCHEMA)
    wrong = [e for e in examples if not everything.is_valid(e)]
    assert not wrong, wrong
