"""Restart safety on PostgreSQL: a real ``omni serve`` process is killed (SIGKILL) mid-stream
and restarted; every acknowledged message is there exactly once, in seq order, queued visitors
keep their places, and visitors and operators pick up where they were."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from omni.store.postgres import open_postgres_store
from tests.support import Client, connect_tcp, login, start

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
[server]
host = "127.0.0.1"
operator_grace_seconds = 30
native_visitors = true
native_operators = true

[[schedules]]
id = "always"
timezone = "UTC"
[schedules.weekly]
mon = [["00:00", "24:00"]]
tue = [["00:00", "24:00"]]
wed = [["00:00", "24:00"]]
thu = [["00:00", "24:00"]]
fri = [["00:00", "24:00"]]
sat = [["00:00", "24:00"]]
sun = [["00:00", "24:00"]]

[[groups]]
id = 1
name = "Support"

[[services]]
id = 25
name = "Support"
schedule = "always"
links = [{ group = 1 }]

[[operators]]
id = 1
name = "Alice"
groups = [1]
capacity = 3
token = "alice-restart-token-Uy3Te7Wq9"
"""


class Server:
    def __init__(self, config: Path, dsn: str) -> None:
        self.config, self.dsn = config, dsn
        self.process: trio.Process | None = None
        self.url = ""

    async def start(self) -> None:
        self.process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "omni.cli",
                "serve",
                "--config",
                str(self.config),
                "--ws-port",
                "0",
                "--http-port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "OMNI_DATABASE_URL": self.dsn, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        output = b""
        with trio.fail_after(60):
            while b"omni: serving" not in output:
                chunk = await self.process.stdout.receive_some()
                assert chunk, output.decode()
                output += chunk
        found = re.search(rb"(ws://127\.0\.0\.1:\d+)/ws/visitor", output)
        assert found
        self.url = found.group(1).decode()

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            return await self.process.wait()


@pytest.mark.postgresql
@pytest.mark.slow
async def test_sigkill_loses_no_acknowledged_message(postgres_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "omni.toml"
    config.write_text(CONFIG)
    server = Server(config, postgres_dsn)
    await server.start()
    acked: dict[str, dict[str, int]] = {}  # conversation -> client_id -> seq
    sent_text: dict[tuple[str, str], str] = {}
    tokens: dict[str, tuple[str, int]] = {}
    try:
        async with connect_tcp(f"{server.url}/ws/operator") as alice:
            await login(alice, "alice-restart-token-Uy3Te7Wq9")
            visitors: list[tuple[Client, str]] = []
            async with (
                connect_tcp(f"{server.url}/ws/visitor") as v1,
                connect_tcp(f"{server.url}/ws/visitor") as v2,
                connect_tcp(f"{server.url}/ws/visitor") as q1,
                connect_tcp(f"{server.url}/ws/visitor") as q2,
            ):
                for client, name in ((v1, "Ana"), (v2, "Bia")):
                    started = await start(client, name=name)
                    cid = started["conversation_id"]
                    tokens[name] = (started["token"], 0)
                    offer = await alice.until("offer")
                    await alice.send("accept", conversation_id=offer["conversation"]["id"])
                    await client.until("assigned")
                    visitors.append((client, cid))
                    acked[cid] = {}
                # Two visitors fill Alice's last slot and wait: Caio ahead of Duda.
                await alice.send("status", status="paused")
                await alice.until("status")
                queued_tickets = []
                for client, name in ((q1, "Caio"), (q2, "Duda")):
                    started = await start(client, name=name)
                    tokens[name] = (started["token"], 0)
                    queued_tickets.append(started["conversation_id"])
                    await client.until("queued")

                async def chat(client: Client, cid: str, stop: trio.Event) -> None:
                    n = 0
                    with contextlib.suppress(ConnectionClosed):
                        while not stop.is_set():
                            n += 1
                            client_id = f"{cid[:8]}-{n}"
                            sent_text[(cid, client_id)] = f"message {n}"
                            await client.send("message", client_id=client_id, text=f"message {n}")
                            frame = await client.until("ack")
                            acked[cid][frame["client_id"]] = frame["seq"]

                stop = trio.Event()
                with trio.move_on_after(1.5):
                    async with trio.open_nursery() as nursery:
                        for client, cid in visitors:
                            nursery.start_soon(chat, client, cid, stop)
                        await trio.sleep(1.0)
                        # Kill the server while the messages are flowing.
                        await server.kill()
                        stop.set()
        assert all(len(a) > 5 for a in acked.values()), acked

        # Restart on the same database.
        await server.start()
        async with open_postgres_store(postgres_dsn) as store:
            for cid, by_client in acked.items():
                events = await store.events_after(cid, 0)
                seqs = [e.seq for e in events]
                assert seqs == sorted(set(seqs)) == list(range(1, len(seqs) + 1))
                messages = {e.client_key[1]: e for e in events if e.client_key}
                for client_id, seq in by_client.items():
                    assert messages[client_id].seq == seq  # present, exactly once
                    assert messages[client_id].data["text"] == sent_text[(cid, client_id)]
            first_ticket = await store.next_ticket(2026)

        # Visitors resume with their token; the chat goes on.
        cid = visitors[0][1]
        async with connect_tcp(f"{server.url}/ws/visitor") as back:
            await back.send("resume", token=tokens["Ana"][0], last_seq=0)
            resumed = await back.expect("resumed")
            assert resumed["status"] == "active"
            replay: list[dict[str, Any]] = []
            while len(replay) < resumed["last_seq"]:
                frame = await back.recv()
                if "seq" in frame:
                    replay.append(frame)
            assert [f["seq"] for f in replay] == list(range(1, resumed["last_seq"] + 1))
            texts = {f.get("text") for f in replay}
            assert {sent_text[(cid, c)] for c in acked[cid]} <= texts
            # The operator comes back within the grace period: the conversation is still hers.
            async with connect_tcp(f"{server.url}/ws/operator") as alice:
                welcome = await login(alice, "alice-restart-token-Uy3Te7Wq9", available=False)
                assert sorted(c["id"] for c in welcome["conversations"]) == sorted(acked)
                assert welcome["operator"]["status"] == "paused"
                await back.send("message", client_id="after", text="after the crash")
                await back.until("ack")
                assert (await alice.until("message"))["text"] == "after the crash"
            # Queued visitors kept their order.
            async with connect_tcp(f"{server.url}/ws/visitor") as duda:
                await duda.send("resume", token=tokens["Duda"][0], last_seq=0)
                await duda.expect("resumed", status="queued")
                assert (await duda.until("queued"))["position"] == 2
        # Ticket numbers continue: the next one is after the four already given.
        assert first_ticket == 5
        async with connect_tcp(f"{server.url}/ws/visitor") as eva:
            started = await start(eva, name="Eva")
            assert started["ticket"].endswith("-000006")
            eva_token = started["token"]
            await eva.until("queued")
        assert await server.stop() == 0

        # After a graceful stop too: everything is there and the queue order holds.
        await server.start()
        async with (
            connect_tcp(f"{server.url}/ws/visitor") as eva,
            connect_tcp(f"{server.url}/ws/visitor") as caio,
        ):
            await eva.send("resume", token=eva_token, last_seq=0)
            await eva.expect("resumed", status="queued")
            assert (await eva.until("queued"))["position"] == 3
            await caio.send("resume", token=tokens["Caio"][0], last_seq=0)
            await caio.expect("resumed", status="queued")
            assert (await caio.until("queued"))["position"] == 1
            async with connect_tcp(f"{server.url}/ws/visitor") as ana:
                await ana.send("resume", token=tokens["Ana"][0], last_seq=0)
                resumed = await ana.expect("resumed", status="active")
                frames = [await ana.recv() for _ in range(resumed["last_seq"])]
                assert frames[-1]["text"] == "after the crash"
        assert await server.stop() == 0
    finally:
        if server.process is not None and server.process.returncode is None:
            server.process.kill()
            await server.process.wait()
