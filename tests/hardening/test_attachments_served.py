"""Attachments (F11) against a real ``omni serve`` (hardening/serve.py): files sent both ways
over the real websocket and HTTP, every refusal over a real socket, the size limit enforced
while a body streams in (seen from a raw TCP socket: the server answers and stops reading),
and what a SIGKILL leaves behind — between an upload and the message that carries it, and in
the middle of an upload's body.

Service 25 accepts files (its own ``attachments`` table in the configuration); service 26 has
the installation's limits: none. Attachments live under ``--data-dir``, passed explicitly so
that a restarted server finds what the killed one kept.

Rules (hardening/serve.py): every test owns its servers; every wait has a deadline and every
loop a bound on its count and its bytes; no server may log a traceback; clients talk only to
127.0.0.1.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from omni.store.postgres import open_postgres_store
from tests.hardening.serve import ADMIN, ALICE, Served, serving
from tests.support import Client, connect_tcp, eventually, login, start
from tests.test_attachments import PDF, pixel_flood, png, problem, zip_bomb

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]

LIMIT = 256 * 1024
#: Service 25's own limits (lines of its table in hardening/serve.py's configuration).
FILES = f"""
[services.attachments]
enabled = true
max_bytes = {LIMIT}
types = ["image/png", "image/jpeg", "image/gif", "application/pdf"]
"""
NATIVE = "native_visitors = true\nnative_operators = true"


@asynccontextmanager
async def omni(
    tmp_path: Path, postgres_dsn: str, sweep_seconds: int = 3600
) -> AsyncIterator[Served]:
    """``omni serve`` with files on service 25, kept under ``tmp_path/data``; once it has
    stopped (or was killed), its log must hold no traceback."""
    server = f"{NATIVE}\nattachments = {{ sweep_seconds = {sweep_seconds} }}"
    args = ("--data-dir", str(data_dir(tmp_path)))
    async with serving(tmp_path, postgres_dsn, server=server, service=FILES, args=args) as served:
        yield served
    assert "Traceback" not in served.log(), served.log()


def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def kept_files(tmp_path: Path) -> list[Path]:
    """The files of the completed-files area (service 25's folder ``attachments``)."""
    folder = data_dir(tmp_path) / "attachments" / "attachments"
    return sorted(p for p in folder.rglob("*") if p.is_file())


def partials(tmp_path: Path) -> list[Path]:
    """Uploads' temporary files (``.partial``), finished or left by a crash."""
    folder = data_dir(tmp_path) / "attachments" / ".partial"
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.exists() else []


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def upload(
    served: Served, token: str, conversation_id: str, data: bytes, name: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=served.http_url, timeout=15) as http:
        return await http.post(
            f"/api/v1/conversations/{conversation_id}/attachments",
            params={"name": name},
            content=data,
            headers={**bearer(token), "Content-Type": "application/octet-stream"},
        )


async def download(served: Served, token: str, attachment_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=served.http_url, timeout=15) as http:
        return await http.get(f"/api/v1/attachments/{attachment_id}", headers=bearer(token))


async def metrics(served: Served) -> str:
    async with httpx.AsyncClient(base_url=served.http_url, timeout=10) as http:
        reply = await http.get("/metrics")
    assert reply.status_code == 200, reply.text
    return reply.text


async def accepted_by_alice(vera: Client, alice: Client) -> str:
    """Vera, just started on service 25, taken by Alice: the conversation's id (Alice's
    greeting read on both sides)."""
    await login(alice, ALICE)
    offer = await alice.until("offer")
    conversation_id: str = offer["conversation"]["id"]
    await alice.send("accept", conversation_id=conversation_id)
    for side in (alice, vera):
        await side.until("assigned")
        assert (await side.until("message"))["author"]["kind"] == "operator"
    return conversation_id


async def message_with_seq(client: Client, seq: int) -> dict[str, Any]:
    """The ``message`` of ``seq``, among the next ten."""
    for _ in range(10):
        frame = await client.until("message")
        if frame["seq"] == seq:
            return frame
    raise AssertionError(f"no message {seq} among the next ten")


def upload_head(conversation_id: str, token: str, name: str, length: str) -> bytes:
    """The head of an upload request; ``length``: a ``Content-Length`` or ``chunked``."""
    framing = "Transfer-Encoding: chunked" if length == "chunked" else f"Content-Length: {length}"
    return (
        f"POST /api/v1/conversations/{conversation_id}/attachments?name={name} HTTP/1.1\r\n"
        f"Host: omni\r\nAuthorization: Bearer {token}\r\n{framing}\r\n\r\n"
    ).encode()


async def read_answer(stream: trio.SocketStream) -> bytes:
    """One HTTP answer with a JSON body (up to its closing brace), or what came before the
    connection ended; at most 64 KiB."""
    data = b""
    while (b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}")) and len(data) < 65536:
        try:
            more = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not more:
            break
        data += more
    return data


async def wait_closed(stream: trio.SocketStream) -> None:
    """Until the server ends the connection (EOF or reset); at most 1 MiB more is read."""
    received = 0
    while received < 1024 * 1024:
        try:
            more = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return
        if not more:
            return
        received += len(more)
    raise AssertionError("the server kept sending after its answer")


# -- files both ways ---------------------------------------------------------------------------


async def test_files_go_both_ways_through_a_served_conversation(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        omni(tmp_path, postgres_dsn) as served,
        connect_tcp(f"{served.ws_url}/ws/operator") as alice,
        connect_tcp(f"{served.ws_url}/ws/visitor") as vera,
    ):
        started = await start(vera, 25)
        token, conversation_id = started["token"], started["conversation_id"]
        assert await accepted_by_alice(vera, alice) == conversation_id

        # Vera's picture: uploaded with her resume token, sent, received and downloaded.
        r = await upload(served, token, conversation_id, png(16, 12), "photo.png")
        assert r.status_code == 201, r.text
        photo = r.json()
        assert (photo["type"], photo["name"]) == ("image/png", "photo.png")
        await vera.send("attachment", client_id="v-f1", upload_id=photo["upload_id"])
        ack = await vera.until("ack")
        assert ack["client_id"] == "v-f1"
        got = await alice.until("message")
        assert got["seq"] == ack["seq"] and got["author"]["kind"] == "visitor"
        assert got["attachment"] == {
            "id": photo["upload_id"],
            "name": "photo.png",
            "size": photo["size"],
            "type": "image/png",
        }
        fetched = await download(served, ALICE, photo["upload_id"])
        assert fetched.status_code == 200, fetched.text
        assert fetched.headers["content-type"] == "image/png"
        assert len(fetched.content) == photo["size"]
        assert Image.open(io.BytesIO(fetched.content)).size == (16, 12)

        # Alice's PDF: uploaded with her console token, sent, received and downloaded by Vera.
        r = await upload(served, ALICE, conversation_id, PDF, "invoice.pdf")
        assert r.status_code == 201, r.text
        invoice = r.json()
        await alice.send(
            "attachment",
            conversation_id=conversation_id,
            client_id="a-f1",
            upload_id=invoice["upload_id"],
        )
        ack = await alice.until("ack")
        got = await vera.until("message")
        assert got["seq"] == ack["seq"] and got["author"]["kind"] == "operator"
        assert got["attachment"] == {
            "id": invoice["upload_id"],
            "name": "invoice.pdf",
            "size": len(PDF),
            "type": "application/pdf",
        }
        fetched = await download(served, token, invoice["upload_id"])
        assert fetched.status_code == 200 and fetched.content == PDF
        assert fetched.headers["content-disposition"].startswith("attachment;")
    # Both files on the served process's disk, nothing half-written beside them.
    assert len(kept_files(tmp_path)) == 2
    assert partials(tmp_path) == []


# -- refusals ------------------------------------------------------------------------------


def _polyglot() -> bytes:
    """A PNG with an HTML page after its end, and a zip after that."""
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("evil.html", "<script>alert(1)</script>")
    return png() + b"<html><script>alert(document.cookie)</script></html>" + zipped.getvalue()


def refused() -> list[tuple[bytes, str, int, str]]:
    """Files refused, with the status and problem type of the refusal."""
    return [
        (b"<html><script>alert(1)</script></html>" * 10, "cat.png", 415, "attachment-type-unknown"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "logo.svg",
            415,
            "attachment-type-unknown",
        ),
        (pixel_flood(), "flood.png", 422, "attachment-too-many-pixels"),
        (zip_bomb(), "docs.zip", 415, "attachment-type-not-allowed"),
    ]


async def test_refused_uploads_over_a_real_socket(tmp_path: Path, postgres_dsn: str) -> None:
    async with (
        omni(tmp_path, postgres_dsn) as served,
        connect_tcp(f"{served.ws_url}/ws/visitor") as vera,
    ):
        started = await start(vera, 25)
        token, conversation_id = started["token"], started["conversation_id"]
        for data, name, status, kind in refused():
            problem(await upload(served, token, conversation_id, data, name), status, kind)
        # The polyglot is kept as the image Pillow wrote, nothing after it.
        r = await upload(served, token, conversation_id, _polyglot(), "innocent.png")
        assert r.status_code == 201, r.text
        fetched = await download(served, token, r.json()["upload_id"])
        assert fetched.status_code == 200
        assert fetched.content.endswith(b"IEND\xaeB`\x82")
        assert b"script" not in fetched.content and b"evil" not in fetched.content
        figures = await metrics(served)
        for reason, count in [
            ("attachment-type-unknown", 2),
            ("attachment-too-many-pixels", 1),
            ("attachment-type-not-allowed", 1),
        ]:
            assert f'omni_attachment_uploads_refused_total{{reason="{reason}"}} {count}.0' in (
                figures
            )
        assert "omni_attachments_stored 1.0" in figures
    # The refused ones left nothing on disk: the image alone, no temporary file.
    [kept] = kept_files(tmp_path)
    assert kept.read_bytes() == fetched.content
    assert partials(tmp_path) == []


async def test_a_service_without_attachments_refuses_uploads(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        omni(tmp_path, postgres_dsn) as served,
        connect_tcp(f"{served.ws_url}/ws/visitor") as vera,
    ):
        started = await start(vera, 26)  # closed: the conversation waits out of hours
        await vera.until("out_of_hours")
        r = await upload(served, started["token"], started["conversation_id"], png(), "a.png")
        problem(r, 403, "attachments-disabled")
        # The same file goes through on service 25: the refusal is the service's.
        async with connect_tcp(f"{served.ws_url}/ws/visitor") as other:
            open_one = await start(other, 25)
            r = await upload(served, open_one["token"], open_one["conversation_id"], png(), "a.png")
            assert r.status_code == 201, r.text
    assert len(kept_files(tmp_path)) == 1


# -- the size limit, from a raw socket -------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        omni(tmp_path, postgres_dsn) as served,
        connect_tcp(f"{served.ws_url}/ws/visitor") as vera,
    ):
        started = await start(vera, 25)
        port = int(served.http_url.rsplit(":", 1)[1])
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            head = upload_head(
                started["conversation_id"], started["token"], "big.pdf", str(100 * LIMIT)
            )
            await stream.send_all(head)  # and not one byte of the body
            with trio.fail_after(10):
                answer = await read_answer(stream)
                assert answer.startswith(b"HTTP/1.1 413"), answer
                assert b"attachment-too-large" in answer
                assert b"connection: close" in answer.lower()
                await wait_closed(stream)
    assert kept_files(tmp_path) == [] and partials(tmp_path) == []


async def test_a_streamed_body_is_cut_off_at_the_limit(tmp_path: Path, postgres_dsn: str) -> None:
    """A chunked body with no length, a thousand times the limit (256 MiB): the server
    answers 413 and closes the connection; the sender's writes fail once the kernel's buffers
    (a few MiB on loopback) are full — far from the whole body."""
    total = 1000 * LIMIT
    # The most the kernel buffers on a loopback connection: the peer's receive buffer and
    # our send buffer at their ceilings (net.ipv4.tcp_rmem / tcp_wmem), and the limit read.
    buffers = _ceiling("tcp_rmem") + _ceiling("tcp_wmem") + LIMIT
    assert buffers < total // 4
    sent = 0
    stopped_by: type[BaseException] | None = None
    async with (
        omni(tmp_path, postgres_dsn) as served,
        connect_tcp(f"{served.ws_url}/ws/visitor") as vera,
    ):
        started = await start(vera, 25)
        port = int(served.http_url.rsplit(":", 1)[1])
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(
                upload_head(started["conversation_id"], started["token"], "big.pdf", "chunked")
            )
            piece = PDF + b"y" * (64 * 1024 - len(PDF))
            chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"

            async def feed() -> None:
                nonlocal sent, stopped_by
                try:
                    while sent < total:
                        await stream.send_all(chunk)
                        sent += len(piece)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    stopped_by = type(exc)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed)
                    answer = await read_answer(stream)
                    assert answer.startswith(b"HTTP/1.1 413"), answer
                    assert b"attachment-too-large" in answer
                    # The server stops reading and closes: the feed's next writes fail.
                    with trio.fail_after(10):
                        await wait_closed(stream)
    assert stopped_by is trio.BrokenResourceError, (stopped_by, sent)
    assert sent < buffers, (sent, buffers)
    assert kept_files(tmp_path) == [] and partials(tmp_path) == []


def _ceiling(setting: str) -> int:
    """The largest buffer the kernel gives a TCP socket (the last of ``min default max``)."""
    return int(Path(f"/proc/sys/net/ipv4/{setting}").read_text().split()[-1])


# -- a crash between the file and the message -------------------------------------------------


async def test_a_pending_upload_outlives_a_kill_and_is_sent_after_resuming(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with omni(tmp_path, postgres_dsn) as first:
        async with connect_tcp(f"{first.ws_url}/ws/visitor") as vera:
            started = await start(vera, 25)
            token, conversation_id = started["token"], started["conversation_id"]
            r = await upload(first, token, conversation_id, png(20, 10), "photo.png")
            assert r.status_code == 201, r.text
            photo = r.json()
            before = await download(first, token, photo["upload_id"])
            assert before.status_code == 200
        # Killed before any message carries the upload.
        first.process.kill()
        with trio.fail_after(10):
            await first.process.wait()
    [kept] = kept_files(tmp_path)
    assert kept.read_bytes() == before.content
    assert partials(tmp_path) == []

    async with (
        omni(tmp_path, postgres_dsn) as second,
        connect_tcp(f"{second.ws_url}/ws/visitor") as again,
        connect_tcp(f"{second.ws_url}/ws/operator") as alice,
    ):
        await again.send("resume", token=token, last_seq=0)
        assert (await again.expect("resumed"))["status"] == "queued"
        # Still a pending upload of the conversation: the visitor sends it now.
        await again.send("attachment", client_id="v-f1", upload_id=photo["upload_id"])
        ack = await again.until("ack")
        assert ack["client_id"] == "v-f1"
        # Alice takes the conversation: its history brings the file's message, whose file
        # downloads as it was uploaded before the kill.
        await login(alice, ALICE)
        offer = await alice.until("offer")
        assert offer["conversation"]["id"] == conversation_id
        await alice.send("accept", conversation_id=conversation_id)
        got = await message_with_seq(alice, ack["seq"])
        assert got["attachment"]["id"] == photo["upload_id"]
        fetched = await download(second, ALICE, photo["upload_id"])
        assert fetched.status_code == 200 and fetched.content == before.content
        # No message of the conversation points at a missing file.
        async with httpx.AsyncClient(base_url=second.http_url, timeout=10) as http:
            transcript = await http.get(
                f"/api/v1/conversations/{conversation_id}/transcript", headers=bearer(ADMIN)
            )
        assert transcript.status_code == 200, transcript.text
        files = [e["attachment"] for e in transcript.json()["events"] if "attachment" in e]
        assert [f["id"] for f in files] == [photo["upload_id"]]
        for f in files:
            assert (await download(second, ADMIN, f["id"])).status_code == 200
    assert kept_files(tmp_path) == [kept] and partials(tmp_path) == []


async def test_a_kill_in_the_middle_of_an_upload_leaves_nothing_named(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """Two uploads killed half-way: no row, no completed file, only their temporary files —
    which the restarted server's clean-up job deletes once they are old enough (an hour: one is
    aged by hand) and not before (the other might be an upload in progress)."""
    length = 200 * 1024
    half = PDF + b"z" * (length // 2 - len(PDF))
    async with omni(tmp_path, postgres_dsn) as first:
        async with connect_tcp(f"{first.ws_url}/ws/visitor") as vera:
            started = await start(vera, 25)
            token, conversation_id = started["token"], started["conversation_id"]
        port = int(first.http_url.rsplit(":", 1)[1])
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        try:
            for n, stream in enumerate(streams):
                head = upload_head(conversation_id, token, f"half-{n}.pdf", str(length))
                await stream.send_all(head + half)

            def written() -> bool:
                found = partials(tmp_path)
                return len(found) == 2 and all(p.stat().st_size > 0 for p in found)

            await eventually(written)
            first.process.kill()
            with trio.fail_after(10):
                await first.process.wait()
        finally:
            for stream in streams:
                await stream.aclose()
    leftovers = partials(tmp_path)
    assert len(leftovers) == 2
    assert kept_files(tmp_path) == []
    async with open_postgres_store(postgres_dsn) as store:
        assert await store.attachment_usage(conversation_id) == (0, 0)
        assert await store.attachment_totals() == (0, 0)
    # An hour and more later (as the file's age says), the first one is a crash's leftover.
    old, recent = leftovers
    aged = time.time() - 2 * 3600
    os.utime(old, (aged, aged))

    async with (
        omni(tmp_path, postgres_dsn, sweep_seconds=1) as second,
        connect_tcp(f"{second.ws_url}/ws/visitor") as again,
    ):
        await eventually(lambda: not old.exists(), seconds=15)
        assert recent.exists()
        # The leftovers were never counted as files kept.
        figures = await metrics(second)
        assert "omni_attachments_stored 0.0" in figures
        assert "omni_attachment_files_deleted_total 0.0" in figures
        # The conversation is unharmed: the visitor resumes and sends the file again, whole.
        await again.send("resume", token=token, last_seq=0)
        await again.expect("resumed")
        r = await upload(second, token, conversation_id, PDF, "whole.pdf")
        assert r.status_code == 201, r.text
        await again.send("attachment", client_id="v-f1", upload_id=r.json()["upload_id"])
        assert (await again.until("ack"))["client_id"] == "v-f1"
    assert len(kept_files(tmp_path)) == 1
    assert partials(tmp_path) == [recent]
