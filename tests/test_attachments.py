"""Attachments (F11), end to end over real HTTP against a whole server: uploads by the visitor
and the operator, every refusal with its problem type, the size limit enforced while the body
streams, who may download, how files are served; the store's metadata in both stores; the
clean-up job (retention, pending uploads, what a crash leaves), and its race with a message
claiming the upload it deletes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image, PngImagePlugin

from omni.attachments import FolderStore, Uploads
from omni.domain.attachments import Attachment
from omni.domain.conversation import Status
from omni.domain.model import Role
from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from omni.settings import AttachmentsSettings
from omni.store import AttachmentClaimFailed, Store, StoreError, Write
from omni.store.memory import MemoryStore
from omni.store.postgres import PostgresStore
from tests.support import (
    T0,
    TOK_ALICE,
    TOK_BRUNO,
    TOK_CARLA,
    Client,
    api_token,
    connect_tcp,
    eventually,
    free_port,
    login,
    make_config,
    make_conversation,
    start,
    with_items,
    with_service,
)

ADMIN = "admin-secret-token-Rk6Lx1Vp9Nq"
SUPERVISOR = "supervisor-secret-token-Gz2Hb8Mc5W"
LIMIT = 256 * 1024
LIMITS = {
    "enabled": True,
    "max_bytes": LIMIT,
    "types": ["image/png", "image/jpeg", "image/gif", "application/pdf"],
    "max_files_per_conversation": 6,
    "max_bytes_per_conversation": 4 * LIMIT,
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png(width: int = 8, height: int = 8, *, text: str | None = None) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("Comment", text)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def jpeg() -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    Image.new("RGB", (16, 16), (1, 2, 3)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n" + b"x" * 100


def pixel_flood(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG header declaring a huge canvas, with (almost) no data: a few hundred bytes
    that would take gigabytes to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


def zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.txt", b"\x00" * 50_000_000)
    return out.getvalue()


def config() -> Any:
    def own_limits(body: dict[str, Any]) -> None:
        body["attachments"] = LIMITS

    return with_items(
        with_service(make_config(), 25, own_limits),
        api_token("root", ADMIN),
        api_token("boss", SUPERVISOR, Role.SUPERVISOR),
    )


@dataclass
class Chat:
    server: RunningServer
    http: httpx.AsyncClient
    visitor: Client
    token: str
    conversation_id: str
    alice: Client


@pytest.fixture
async def chat() -> AsyncIterator[Chat]:
    """Service 25 (its own limits) with Vera's conversation held by Alice; Carla serves the
    same service, Bruno only another one."""
    async with (
        open_server(
            config(), entropy=SeededEntropy(5), host="127.0.0.1", ws_port=0, http_port=0
        ) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
        connect_tcp(server.ws_url + "/ws/operator") as alice,
        connect_tcp(server.ws_url + "/ws/visitor") as visitor,
    ):
        await login(alice, TOK_ALICE)
        started = await start(visitor, 25)
        offer = await alice.expect("offer")
        await alice.send("accept", conversation_id=offer["conversation"]["id"])
        await visitor.expect("assigned")
        yield Chat(server, http, visitor, started["token"], started["conversation_id"], alice)


async def upload(
    chat: Chat,
    data: bytes,
    name: str,
    token: str | None = None,
    conversation_id: str | None = None,
    content_type: str = "application/octet-stream",
) -> httpx.Response:
    return await chat.http.post(
        f"/api/v1/conversations/{conversation_id or chat.conversation_id}/attachments",
        params={"name": name},
        content=data,
        headers={**bearer(token or chat.token), "Content-Type": content_type},
    )


def problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://omni.dev/problems/{kind}", body
    return body


# -- good files, each way ------------------------------------------------------------------


async def test_the_visitor_uploads_an_image_kept_without_its_metadata(chat: Chat) -> None:
    sent = png(text="GPS: -23.55,-46.63 <script>alert(1)</script>")
    r = await upload(chat, sent, "../../holiday photo.png")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "holiday photo.png"
    assert body["type"] == "image/png"
    assert body["conversation_id"] == chat.conversation_id
    assert r.headers["location"] == f"/api/v1/attachments/{body['upload_id']}"
    # The link works without a token (an <img> sends none).
    got = await chat.http.get(body["url"])
    assert got.status_code == 200
    assert got.content.startswith(b"\x89PNG")
    assert b"GPS" not in got.content and b"script" not in got.content
    assert body["size"] == len(got.content)
    assert Image.open(io.BytesIO(got.content)).size == (8, 8)
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"].startswith("inline; filename=")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    # The uploader downloads it with their token too.
    own = await chat.http.get(
        f"/api/v1/attachments/{body['upload_id']}", headers=bearer(chat.token)
    )
    assert own.status_code == 200 and own.content == got.content


async def test_a_photo_loses_its_exif(chat: Chat) -> None:
    sent = jpeg()
    assert b"SecretCam" in sent
    r = await upload(chat, sent, "me.jpg")
    assert r.status_code == 201, r.text
    got = await chat.http.get(r.json()["url"])
    assert got.content.startswith(b"\xff\xd8") and b"SecretCam" not in got.content


async def test_the_operator_uploads_a_pdf_served_as_a_download(chat: Chat) -> None:
    r = await upload(chat, PDF, "invoice.pdf", token=TOK_ALICE)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["type"], body["size"]) == ("application/pdf", len(PDF))
    got = await chat.http.get(body["url"])
    assert got.status_code == 200 and got.content == PDF
    assert got.headers["content-disposition"].startswith('attachment; filename="invoice.pdf"')
    admin = await chat.http.get(r.headers["location"], headers=bearer(ADMIN))
    assert admin.status_code == 200 and admin.content == PDF


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "status", "kind"),
    [
        (b"<html><script>alert(1)</script></html>" * 10, "cat.png", 415, "attachment-type-unknown"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "logo.svg",
            415,
            "attachment-type-unknown",
        ),
        (jpeg(), "photo.png", 415, "attachment-type-mismatch"),
        (zip_bomb(), "docs.zip", 415, "attachment-type-not-allowed"),
        (pixel_flood(), "flood.png", 422, "attachment-too-many-pixels"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "broken.png", 422, "attachment-image-unreadable"),
        (b"", "nothing.pdf", 422, "attachment-empty"),
    ],
    ids=[
        "html-named-png",
        "svg-with-script",
        "jpeg-named-png",
        "zip-bomb",
        "pixel-flood",
        "broken-png",
        "empty",
    ],
)
async def test_refused_uploads(chat: Chat, data: bytes, name: str, status: int, kind: str) -> None:
    problem(await upload(chat, data, name), status, kind)
    metrics = (await chat.http.get("/metrics")).text
    assert f'omni_attachment_uploads_refused_total{{reason="{kind}"}} 1.0' in metrics
    assert "omni_attachments_stored 0.0" in metrics


async def test_a_polyglot_keeps_only_its_image(chat: Chat) -> None:
    """A PNG with an HTML page after its end (and a zip after that): detected as PNG, kept as
    the image Pillow wrote, nothing else."""
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("evil.html", "<script>alert(1)</script>")
    sent = png() + b"<html><script>alert(document.cookie)</script></html>" + zipped.getvalue()
    r = await upload(chat, sent, "innocent.png")
    assert r.status_code == 201, r.text
    got = await chat.http.get(r.json()["url"])
    assert b"script" not in got.content and b"evil" not in got.content
    assert got.content.endswith(b"IEND\xaeB`\x82")


async def test_a_claimed_type_that_the_content_contradicts_is_refused(chat: Chat) -> None:
    r = await upload(chat, PDF, "report", content_type="image/png")
    problem(r, 415, "attachment-type-mismatch")


async def test_a_service_without_attachments_refuses_them(chat: Chat) -> None:
    async with connect_tcp(chat.server.ws_url + "/ws/visitor") as other:
        started = await start(other, 27)  # the installation's limits: disabled by default
        r = await upload(chat, png(), "a.png", started["token"], started["conversation_id"])
        problem(r, 403, "attachments-disabled")


async def test_a_conversation_has_a_quota(chat: Chat) -> None:
    for n in range(LIMITS["max_files_per_conversation"]):
        r = await upload(chat, png(n + 1, 1), f"{n}.png")
        assert r.status_code == 201, r.text
    problem(await upload(chat, png(), "one-more.png"), 409, "attachment-quota-exceeded")


async def test_a_declared_length_over_the_limit_is_refused_before_reading(chat: Chat) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", chat.server.http_port or 0) as stream:
        head = (
            f"POST /api/v1/conversations/{chat.conversation_id}/attachments?name=big.pdf "
            "HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {chat.token}\r\nContent-Length: {100 * LIMIT}\r\n\r\n"
        )
        await stream.send_all(head.encode())
        with trio.fail_after(5):
            answer = await _read_answer(stream)
            # ... and closed, not left reading a body nobody wants (the request's end used
            # to cancel hypercorn's close: admin_api.app._closes_when_answered).
            assert await _read_answer(stream) == b""
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"attachment-too-large" in answer and b"connection: close" in answer.lower()


async def test_a_streamed_body_is_cut_off_at_the_limit(chat: Chat) -> None:
    """A chunked body without a length, 200 times the limit: the server answers 413 and closes
    the connection having read a small part of it."""
    total = 200 * LIMIT
    sent = 0
    answer = b""
    async with await trio.open_tcp_stream("127.0.0.1", chat.server.http_port or 0) as stream:
        head = (
            f"POST /api/v1/conversations/{chat.conversation_id}/attachments?name=big.pdf "
            "HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {chat.token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await stream.send_all(head.encode())
        piece = PDF + b"y" * (16 * 1024 - len(PDF))
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"

        async def feed(cancel: trio.CancelScope) -> None:
            nonlocal sent
            try:
                while sent < total:
                    await stream.send_all(chunk)
                    sent += len(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed, nursery.cancel_scope)
                answer = await _read_answer(stream)
                nursery.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"attachment-too-large" in answer
    # What the sender got into the socket before the answer: the limit plus what the kernel's
    # buffers hold — far from the whole body.
    assert sent < total // 4, (sent, total)


async def _read_answer(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        try:
            more = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not more:
            break
        data += more
    return data


# -- who may download ------------------------------------------------------------------------


async def _claimed(chat: Chat) -> str:
    """An attachment of the chat that a message carries (the protocol's next step claims
    uploads; here the row is made claimed directly)."""
    r = await upload(chat, PDF, "shared.pdf")
    assert r.status_code == 201, r.text
    store = chat.server.hub.store
    pending = await store.attachment(r.json()["upload_id"])
    assert pending is not None and pending.pending
    claimed = replace(pending, id="claimed-1", claimed_at=T0)
    await store.add_attachment(claimed)
    return claimed.id


async def test_who_may_download(chat: Chat) -> None:
    attachment_id = await _claimed(chat)
    path = f"/api/v1/attachments/{attachment_id}"
    missing = await chat.http.get("/api/v1/attachments/nope", headers=bearer(ADMIN))
    problem(missing, 404, "attachment-not-found")
    for token in (chat.token, TOK_ALICE, TOK_CARLA, ADMIN, SUPERVISOR):
        got = await chat.http.get(path, headers=bearer(token))
        assert got.status_code == 200 and got.content == PDF, token
    async with connect_tcp(chat.server.ws_url + "/ws/visitor") as other:
        stranger = (await start(other, 25))["token"]
        # Another visitor, and an operator of another service: the 404 of a missing file.
        for token in (stranger, TOK_BRUNO):
            refused = await chat.http.get(path, headers=bearer(token))
            assert problem(refused, 404, "attachment-not-found") == missing.json() | {
                "detail": missing.json()["detail"]
            }
            link = await chat.http.post(path + "/link", headers=bearer(token))
            problem(link, 404, "attachment-not-found")
        # ... nor may they upload into the conversation.
        r = await upload(chat, png(), "x.png", token=stranger)
        problem(r, 404, "not-found")
        r = await upload(chat, png(), "x.png", token=TOK_BRUNO)
        problem(r, 404, "not-found")
    # Carla may see the conversation (her group serves it) but does not hold it.
    problem(await upload(chat, png(), "x.png", token=TOK_CARLA), 409, "conversation-not-held")
    problem(await chat.http.get(path), 401, "unauthorized")


async def test_a_pending_upload_is_only_its_uploaders(chat: Chat) -> None:
    r = await upload(chat, png(), "draft.png")
    path = r.headers["location"]
    assert (await chat.http.get(path, headers=bearer(chat.token))).status_code == 200
    problem(await chat.http.get(path, headers=bearer(TOK_ALICE)), 404, "attachment-not-found")
    assert (await chat.http.get(path, headers=bearer(SUPERVISOR))).status_code == 200


async def test_download_links_are_signed_and_expire(chat: Chat) -> None:
    r = await upload(chat, png(), "a.png")
    url: str = r.json()["url"]
    minted = await chat.http.post(r.headers["location"] + "/link", headers=bearer(chat.token))
    assert minted.status_code == 200 and minted.json()["url"].startswith(r.headers["location"])
    forged = url[:-1] + ("0" if url[-1] != "0" else "1")
    problem(await chat.http.get(forged), 404, "attachment-not-found")
    other_file = url.replace(r.json()["upload_id"], "claimed-1")
    problem(await chat.http.get(other_file), 404, "attachment-not-found")
    assert chat.server.uploads is not None
    links = chat.server.uploads.links
    later = chat.server.hub.clock.now() + timedelta(seconds=links.ttl + 5)
    _path, _, query = url.partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert not links.check(r.json()["upload_id"], params["expires"], params["signature"], later)


# -- the store's metadata, both stores -------------------------------------------------------


def attachment(n: int, conversation: str = "c1", **changes: Any) -> Attachment:
    return Attachment(
        id=f"a{n}",
        conversation_id=conversation,
        uploaded_by="visitor",
        name=f"{n}.png",
        size=100 * n,
        content_type="image/png",
        file_key=f"attachments/ab/{n:064x}",
        created_at=T0 + timedelta(seconds=n),
        **changes,
    )


async def test_the_store_keeps_attachments(store: Store) -> None:
    old = make_conversation(1, Status.CLOSED, at=T0 - timedelta(days=40))
    new = make_conversation(2, Status.ACTIVE, at=T0)
    await store.write(Write(conversation=old))
    await store.write(Write(conversation=new))
    kept = [
        attachment(1, "c1", claimed_at=T0),
        attachment(2, "c2"),  # pending, recent
        attachment(3, "c2", claimed_at=T0),
        replace(attachment(4, "c2"), created_at=T0 - timedelta(days=2)),  # pending, old
        replace(attachment(5, "c2", claimed_at=T0), file_key=attachment(3).file_key),
    ]
    for a in kept:
        await store.add_attachment(a)
    assert await store.attachment("a1") == kept[0]
    assert await store.attachment("nope") is None
    assert await store.attachment_usage("c2") == (4, 200 + 300 + 400 + 500)
    assert await store.attachment_totals() == (5, 1500)
    expired = await store.expired_attachments(T0 - timedelta(days=30), T0 - timedelta(days=1), 10)
    assert [a.id for a in expired] == ["a4", "a1"]
    assert [a.id for a in await store.expired_attachments(None, T0 - timedelta(days=1), 10)] == [
        "a4"
    ]
    await store.delete_attachments(["a1", "a4", "unknown"])
    keys = [attachment(n).file_key for n in (1, 2, 3, 4)]
    assert await store.files_in_use(keys) == {attachment(2).file_key, attachment(3).file_key}
    await store.delete_attachments(["a3"])
    assert await store.files_in_use([attachment(3).file_key]) == {attachment(3).file_key}


async def test_attachment_figures_count_the_files_sent_in_the_periods_conversations(
    store: Store,
) -> None:
    """By the conversation's service and creation time ([start, end), like the reports'
    conversations); pending uploads do not count."""
    await store.write(Write(conversation=make_conversation(1, Status.CLOSED, at=T0)))
    await store.write(Write(conversation=make_conversation(2, Status.ACTIVE, service_id=30)))
    late = make_conversation(3, Status.ACTIVE, at=T0 + timedelta(hours=1))
    await store.write(Write(conversation=late))
    for a in [
        attachment(1, "c1", claimed_at=T0),
        attachment(2, "c1", claimed_at=T0),
        attachment(3, "c1"),  # pending
        attachment(4, "c2", claimed_at=T0),
        attachment(5, "c3", claimed_at=T0),  # its conversation is after the period
    ]:
        await store.add_attachment(a)
    end = T0 + timedelta(hours=1)
    assert await store.attachment_figures(T0, end) == {25: (2, 300), 30: (1, 400)}
    assert await store.attachment_figures(T0 + timedelta(seconds=2), end) == {30: (1, 400)}
    assert await store.attachment_figures(end, end + timedelta(hours=1)) == {25: (1, 500)}
    assert await store.attachment_figures(T0 - timedelta(days=1), T0) == {}


async def test_the_report_counts_the_files_sent(chat: Chat) -> None:
    """GET /api/v1/reports: the files a message carried, in all and in the service's figures;
    an upload no message carries (pending) does not count."""
    image = png()
    upload_id = await _uploaded(chat, image, "photo.png")
    await _uploaded(chat, PDF, "pending.pdf")
    await chat.visitor.send("attachment", client_id="v-f1", upload_id=upload_id)
    await chat.visitor.until("ack")
    sent = await chat.server.hub.store.attachment(upload_id)
    assert sent is not None and not sent.pending
    r = await chat.http.get("/api/v1/reports", headers=bearer(SUPERVISOR))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"]["files_sent"], body["total"]["file_bytes"]) == (1, sent.size)
    [service] = [s for s in body["services"] if s["service_id"] == 25]
    assert (service["files_sent"], service["file_bytes"]) == (1, sent.size)
    assert all("files_sent" not in g for g in body["groups"])


# -- the clean-up job ----------------------------------------------------------------------


class Now:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> Any:
        return self.at


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_the_clean_up_job(tmp_path: Path) -> None:
    from omni.attachments import Upload
    from omni.domain.model import Attachments

    store = MemoryStore()
    files = FolderStore(tmp_path)
    now = Now()
    uploads = Uploads(store, files, AttachmentsSettings(retention_days=30), now)
    old = make_conversation(1, Status.CLOSED, at=T0 - timedelta(days=31))
    new = make_conversation(2, Status.ACTIVE, at=T0)
    for conv in (old, new):
        await store.write(Write(conversation=conv))
    limits = Attachments(enabled=True, types=("application/pdf",))
    kept = []
    for conv_id, data in (("c1", PDF + b"1"), ("c2", PDF + b"2"), ("c2", PDF + b"3")):
        upload = Upload(conv_id, "visitor", "f.pdf", None, None, limits)
        kept.append(await uploads.receive(upload, _body(data)))
    claimed = [replace(a, id=a.id + "-claimed", claimed_at=T0) for a in kept[:2]]
    for a in claimed:
        await store.add_attachment(a)
    # A crash between the file and its row, and one in the middle of writing a file.
    orphan = await files.commit(await files.begin(), "attachments", "f" * 64)
    partial = await files.begin()
    assert files.path_of(orphan).exists() and partial.exists()

    # Past the retention period: the old conversation's rows and file; the orphans are too
    # recent to be told from an upload in progress.
    assert await uploads.sweep() == 1
    assert await store.attachment(kept[0].id) is None
    assert await store.attachment(claimed[0].id) is None
    assert not files.path_of(kept[0].file_key).exists()
    assert files.path_of(orphan).exists() and partial.exists()

    # A day later the pending uploads go, the claimed one stays; old orphans are swept.
    now.at = T0 + timedelta(days=1, seconds=1)
    await uploads.sweep(orphan_age=0)
    assert await store.attachment(kept[1].id) is None
    assert await store.attachment(kept[2].id) is None
    assert await store.attachment(claimed[1].id) is not None
    assert files.path_of(claimed[1].file_key).exists()  # shared with the pending one: kept
    assert not files.path_of(kept[2].file_key).exists()
    assert not files.path_of(orphan).exists() and not partial.exists()
    assert (uploads.counters.stored_files, uploads.counters.stored_bytes) == (1, claimed[1].size)


# -- the attachment frame (the protocol, docs/protocol.md §2.6) ----------------------------


async def _uploaded(chat: Chat, data: bytes, name: str, token: str | None = None) -> str:
    r = await upload(chat, data, name, token=token)
    assert r.status_code == 201, r.text
    upload_id: str = r.json()["upload_id"]
    return upload_id


def _error(frame: dict[str, Any], code: str, client_id: str) -> None:
    assert frame["type"] == "error" and frame["code"] == code, frame
    assert frame["client_id"] == client_id


async def test_the_visitor_sends_a_file_as_a_message(chat: Chat) -> None:
    image = png()
    upload_id = await _uploaded(chat, image, "photo.png")
    await chat.visitor.send("attachment", client_id="v-f1", upload_id=upload_id)
    ack = await chat.visitor.until("ack")
    assert ack["client_id"] == "v-f1"
    while (got := await chat.alice.until("message"))["seq"] != ack["seq"]:
        pass  # the greeting
    kept = await chat.server.hub.store.attachment(upload_id)
    assert kept is not None and not kept.pending
    assert got["seq"] == ack["seq"] and got["author"]["kind"] == "visitor"
    assert got["text"] == "photo.png"
    assert got["attachment"] == {
        "id": upload_id,
        "name": "photo.png",
        "size": kept.size,
        "type": "image/png",
    }
    # The same client_id again: the same ack, nothing stored or claimed again.
    events = await chat.server.hub.store.events_after(chat.conversation_id, 0)
    await chat.visitor.send("attachment", client_id="v-f1", upload_id=upload_id)
    assert (await chat.visitor.until("ack")) == ack
    assert await chat.server.hub.store.events_after(chat.conversation_id, 0) == events
    # Another client_id: the upload is in a message already.
    await chat.visitor.send("attachment", client_id="v-f2", upload_id=upload_id)
    _error(await chat.visitor.until("error"), "attachment_claimed", "v-f2")
    # The operator can download it through the link the page mints.
    link = await chat.http.post(f"/api/v1/attachments/{upload_id}/link", headers=bearer(TOK_ALICE))
    assert link.status_code == 200, link.text


async def test_the_operator_sends_a_file_the_visitor_receives(chat: Chat) -> None:
    upload_id = await _uploaded(chat, PDF, "invoice.pdf", token=TOK_ALICE)
    # Only the uploader may send it.
    await chat.visitor.send("attachment", client_id="v-x", upload_id=upload_id)
    _error(await chat.visitor.until("error"), "not_your_attachment", "v-x")
    conversation_id = chat.conversation_id
    await chat.alice.send(
        "attachment", conversation_id=conversation_id, client_id="a-f1", upload_id=upload_id
    )
    ack = await chat.alice.until("ack")
    while (got := await chat.visitor.until("message"))["seq"] != ack["seq"]:
        pass  # the greeting
    assert got["seq"] == ack["seq"] and got["author"]["kind"] == "operator"
    assert got["attachment"] == {
        "id": upload_id,
        "name": "invoice.pdf",
        "size": len(PDF),
        "type": "application/pdf",
    }
    await chat.alice.send(
        "attachment", conversation_id=conversation_id, client_id="a-f1", upload_id=upload_id
    )
    assert (await chat.alice.until("ack")) == ack
    # The replay of a resumed visitor and the admin API's transcript include it.
    async with connect_tcp(chat.server.ws_url + "/ws/visitor") as again:
        await again.send("resume", token=chat.token, last_seq=0)
        while (frame := await again.until("message"))["seq"] != ack["seq"]:
            pass
        assert frame["attachment"]["id"] == upload_id
    r = await chat.http.get(
        f"/api/v1/conversations/{conversation_id}/transcript", headers=bearer(ADMIN)
    )
    assert r.status_code == 200, r.text
    files = [e["attachment"] for e in r.json()["events"] if "attachment" in e]
    assert files == [got["attachment"]]


async def test_an_upload_of_another_conversation_or_none_is_unknown(chat: Chat) -> None:
    async with connect_tcp(chat.server.ws_url + "/ws/visitor") as other:
        started = await start(other, 25)
        r = await upload(
            chat,
            PDF,
            "theirs.pdf",
            token=started["token"],
            conversation_id=started["conversation_id"],
        )
        assert r.status_code == 201, r.text
        theirs = r.json()["upload_id"]
        await chat.visitor.send("attachment", client_id="v-1", upload_id=theirs)
        _error(await chat.visitor.until("error"), "unknown_attachment", "v-1")
        await chat.visitor.send("attachment", client_id="v-2", upload_id="no-such-upload")
        _error(await chat.visitor.until("error"), "unknown_attachment", "v-2")
        still = await chat.server.hub.store.attachment(theirs)
        assert still is not None and still.pending


async def test_a_claim_commits_with_its_message(store: Store) -> None:
    """The store claims a message's attachments in the message's write, all or nothing."""
    from omni.store import StoredEvent

    conv = make_conversation(2, Status.ACTIVE, at=T0)
    await store.write(Write(conversation=conv))
    await store.add_attachment(attachment(1, "c2"))

    def message(seq: int) -> StoredEvent:
        frame = f'{{"type":"message","conversation_id":"c2","seq":{seq}}}'
        return StoredEvent("c2", seq, "message", "both", frame, ("v", f"v-{seq}"))

    # Claiming an unknown attachment fails the write: the event is not stored either.
    with pytest.raises(AttachmentClaimFailed):
        await store.write(Write(events=[message(1)], claims=[("nope", T0)]))
    assert await store.events_after("c2", 0) == []
    await store.write(Write(events=[message(1)], claims=[("a1", T0)]))
    claimed = await store.attachment("a1")
    assert claimed is not None and claimed.claimed_at == T0
    assert [e.seq for e in await store.events_after("c2", 0)] == [1]
    # Claimed already: refused, with its event.
    with pytest.raises(AttachmentClaimFailed):
        await store.write(Write(events=[message(2)], claims=[("a1", T0)]))
    assert [e.seq for e in await store.events_after("c2", 0)] == [1]
    # Any other failure is not a failed claim.
    with pytest.raises(StoreError) as other:
        await store.write(Write(events=[message(1)], claims=[("a2", T0)]))
    assert not isinstance(other.value, AttachmentClaimFailed)


def _message(conversation_id: str, seq: int) -> Any:
    from omni.store import StoredEvent

    frame = f'{{"type":"message","conversation_id":"{conversation_id}","seq":{seq}}}'
    return StoredEvent(
        conversation_id, seq, "message", "both", frame, ("v", f"{conversation_id}-{seq}")
    )


async def test_a_failed_claim_fails_only_its_own_write(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes committed together (PostgreSQL's batch): the one whose claim fails gets
    :class:`AttachmentClaimFailed`, its neighbours commit, their claims too."""
    for n in (2, 3):
        await store.write(Write(conversation=make_conversation(n, Status.ACTIVE, at=T0)))
    await store.add_attachment(attachment(3, "c3"))
    results: dict[str, str] = {}

    async def write(name: str, w: Write) -> None:
        try:
            await store.write(w)
            results[name] = "stored"
        except AttachmentClaimFailed:
            results[name] = "claim failed"
        except StoreError:
            results[name] = "failed"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "text", Write(events=[_message("c2", 1)]))
        nursery.start_soon(write, "gone", Write(events=[_message("c2", 2)], claims=[("a9", T0)]))
        nursery.start_soon(write, "file", Write(events=[_message("c3", 1)], claims=[("a3", T0)]))
    assert results == {"text": "stored", "gone": "claim failed", "file": "stored"}
    assert [e.seq for e in await store.events_after("c2", 0)] == [1]
    assert [e.seq for e in await store.events_after("c3", 0)] == [1]
    claimed = await store.attachment("a3")
    assert claimed is not None and not claimed.pending
    if isinstance(store, PostgresStore):
        # The three went in one batch, retried write by write.
        assert "a batch of 3 writes failed" in caplog.text


async def test_the_emailed_transcript_links_the_files() -> None:
    from tests.test_transcript import smtp_server

    port = free_port()
    smtp = {"host": "127.0.0.1", "port": port, "sender": "chat@example.com", "timeout": 5}

    def files(body: dict[str, Any]) -> None:
        body["attachments"] = LIMITS

    config = with_service(make_config(smtp=smtp), 27, files)  # 27: no survey
    async with (
        smtp_server(port) as inbox,
        open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv,
        httpx.AsyncClient(base_url=srv.http_url, timeout=10) as http,
        connect_tcp(srv.ws_url + "/ws/operator") as bruno,
        connect_tcp(srv.ws_url + "/ws/visitor") as vera,
    ):
        await login(bruno, TOK_BRUNO)
        started = await start(vera, 27)
        cid, token = started["conversation_id"], started["token"]
        offer = await bruno.until("offer")
        await bruno.send("accept", conversation_id=offer["conversation"]["id"])
        await vera.until("assigned")
        picture = png(12, 10)
        reply = await http.post(
            f"/api/v1/conversations/{cid}/attachments",
            params={"name": "photo.png"},
            content=picture,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 201, reply.text
        stored_size = reply.json()["size"]
        await vera.send("attachment", client_id="f1", upload_id=reply.json()["upload_id"])
        await vera.until("ack")
        await bruno.send("end", conversation_id=cid)
        await vera.until("closed")
        await vera.send("transcript", email="vera@example.com")
        await vera.until("transcript_queued")
        await eventually(lambda: len(inbox.messages) == 1)
        body = inbox.messages[0].get_content()
        [line] = [x for x in body.splitlines() if "[file: photo.png" in x]
        url = line.rsplit(" ", 1)[1]
        assert url.startswith(f"{srv.http_url}/api/v1/attachments/")
        # The link works from the e-mail, with no token: the visitor's file, as stored.
        async with httpx.AsyncClient(timeout=10) as anyone:
            download = await anyone.get(url)
        assert download.status_code == 200
        assert len(download.content) == stored_size


async def test_an_operators_sync_replays_the_file(chat: Chat) -> None:
    upload_id = await _uploaded(chat, png(), "photo.png")
    await chat.visitor.send("attachment", client_id="v-f9", upload_id=upload_id)
    ack = await chat.visitor.until("ack")
    # Alice's console comes back (a reload): sync from 0 brings the file's message once.
    await chat.alice.send("sync", conversation_id=chat.conversation_id, last_seq=0)
    replayed = []
    while True:
        frame = await chat.alice.until("message")
        if frame["seq"] == ack["seq"]:
            replayed.append(frame)
            if len(replayed) == 2:  # the live one, then the replayed one
                break
    live, again = replayed
    assert again == live
    assert again["attachment"]["id"] == upload_id and again["attachment"]["name"] == "photo.png"


# -- the clean-up job's race with a message ---------------------------------------------------


class CleanedMeanwhile:
    """A store through which the clean-up job deletes one pending upload between the
    conversation's lookup of it and the write of the message that claims it: the lookup still
    finds it pending, the claim then finds nothing."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.uploads: Uploads | None = None
        #: The upload whose next lookup runs the clean-up job, a day later.
        self.upload_id: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def attachment(self, attachment_id: str) -> Attachment | None:
        found = await self._store.attachment(attachment_id)
        if attachment_id == self.upload_id:
            self.upload_id = None
            uploads = self.uploads
            assert uploads is not None and found is not None and found.pending
            now = uploads.now
            later = now() + timedelta(seconds=uploads.settings.pending_seconds + 1)
            uploads.now = lambda: later
            try:
                assert await uploads.sweep() == 1
            finally:
                uploads.now = now
        return found


async def test_an_upload_deleted_before_its_message_is_stored_is_refused(store: Store) -> None:
    """The clean-up job deletes a pending upload after the conversation looked it up and before
    the message's write claims it: the sender gets ``unknown_attachment`` on the same socket,
    and the conversation goes on — the next message has the next seq, nothing skipped or
    stored twice, the frame's client_id still free."""
    racing = CleanedMeanwhile(store)
    async with (
        open_server(
            config(),
            store=racing,
            entropy=SeededEntropy(5),
            host="127.0.0.1",
            ws_port=0,
            http_port=0,
        ) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
        connect_tcp(server.ws_url + "/ws/operator") as alice,
        connect_tcp(server.ws_url + "/ws/visitor") as visitor,
    ):
        racing.uploads = server.uploads
        await login(alice, TOK_ALICE)
        started = await start(visitor, 25)
        offer = await alice.expect("offer")
        await alice.send("accept", conversation_id=offer["conversation"]["id"])
        await visitor.expect("assigned")
        chat = Chat(server, http, visitor, started["token"], started["conversation_id"], alice)
        await visitor.send("message", client_id="v-1", text="before")
        before = (await visitor.until("ack"))["seq"]

        upload_id = await _uploaded(chat, png(), "photo.png")
        racing.upload_id = upload_id
        await visitor.send("attachment", client_id="v-f1", upload_id=upload_id)
        _error(await visitor.until("error"), "unknown_attachment", "v-f1")
        assert racing.upload_id is None  # the job did run in between
        assert await store.attachment(upload_id) is None

        # The same socket, the next seq.
        await visitor.send("message", client_id="v-2", text="after")
        after = await visitor.until("ack")
        assert after["client_id"] == "v-2" and after["seq"] == before + 1
        # The refused frame's client_id was not taken: a new upload sent under it is a new
        # message (not the ack of one never stored).
        again = await _uploaded(chat, png(), "photo.png")
        await visitor.send("attachment", client_id="v-f1", upload_id=again)
        sent = await visitor.until("ack")
        assert sent["client_id"] == "v-f1" and sent["seq"] == before + 2
        seen = []
        for _ in range(10):
            frame = await alice.until("message")
            if frame["seq"] >= before:
                seen.append((frame["seq"], frame["text"]))
            if frame["seq"] == sent["seq"]:
                break
        assert seen == [(before, "before"), (before + 1, "after"), (before + 2, "photo.png")]
        events = await store.events_after(chat.conversation_id, 0)
        assert [e.seq for e in events] == list(range(1, sent["seq"] + 1))
        kept = await store.attachment(again)
        assert kept is not None and not kept.pending
