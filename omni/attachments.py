"""Attachments at the edge (F11): the file store, the upload pipeline, download links and the
clean-up job. What is allowed is decided by :mod:`omni.domain.attachments`; this module reads,
writes and decodes.

Rules of this module:

* **Nothing half-written is ever named.** An upload is written to a temporary file under the
  root's ``.partial`` folder, then renamed to its content address
  (``<folder>/<sha256[:2]>/<sha256>``) only once complete and synced; its metadata row is
  written after the rename. A crash before the rename leaves a temporary file, a crash between
  the rename and the row a file nothing names: the clean-up job deletes both (after
  :data:`ORPHAN_AGE` seconds, so that it never races an upload in progress).
* **Limits before reading.** A service that accepts no files, a declared length over the
  limit and a full conversation are refused before the body is read; the size limit is then
  counted chunk by chunk while the body streams in, and the type is decided from the first
  bytes (:data:`~omni.domain.attachments.SNIFF_BYTES`) as soon as they are in.
* **Images are decoded off the event loop** (``trio.to_thread``, at most
  :data:`DECODERS` at a time), after their declared size was checked against the pixel limit,
  and re-encoded without their metadata (EXIF, text chunks, comments): what is kept is what
  Pillow wrote, so bytes smuggled after or inside an image (a polyglot) are gone.
* A file deleted by the clean-up job and a new upload of the same bytes never cross: both
  hold :attr:`Uploads.lock` from "is the file in use?" to the deletion, and from the rename
  to the row.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import filetype
import trio
from PIL import Image, ImageOps

from omni.domain.attachments import (
    IMAGE_TYPES,
    SNIFF_BYTES,
    Attachment,
    Refusal,
    Refused,
    check_pixels,
    check_quota,
    check_type,
    clean_name,
    type_of_name,
)
from omni.domain.model import Attachments
from omni.settings import AttachmentsSettings
from omni.store import Store

log = logging.getLogger(__name__)

#: Seconds a temporary file, or a file no row names, is left alone before the clean-up job
#: deletes it: longer than any upload takes between its first byte and its row.
ORPHAN_AGE = 3600.0
#: Images decoded at once (each in a thread): decoding is CPU-bound and memory-hungry.
DECODERS = 2
#: Bytes read at a time when a file is served.
CHUNK = 64 * 1024

# Omni checks the pixel count itself (check_pixels) before decoding; Pillow's own warning
# between its limit and twice it would only repeat that.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_PILLOW_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
}


class AttachmentStore(Protocol):
    """Where attachments' bytes live, named by ``file_key``."""

    async def begin(self) -> Path:
        """A new temporary file to write an upload to (on the store's file system)."""
        ...

    async def commit(self, partial: Path, folder: str, digest: str) -> str:
        """Make the complete, synced temporary file ``partial`` the file of ``digest`` in
        ``folder`` (atomically; the same bytes already there are kept); its file key."""
        ...

    def read(self, file_key: str) -> AsyncIterator[bytes]:
        """The file's bytes, a chunk at a time (FileNotFoundError if it is gone)."""
        ...

    async def delete(self, file_key: str) -> None:
        """Delete the file, if it is there."""
        ...

    async def stale(self, older_than: float) -> tuple[list[str], list[Path]]:
        """Files (their keys) and temporary files not modified for ``older_than`` seconds."""
        ...


class FolderStore:
    """An :class:`AttachmentStore` in a folder (the guide's model): ``root/<folder>/ab/abcd…``
    and ``root/.partial/`` for uploads in progress."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.partial_dir = self.root / ".partial"
        self.partial_dir.mkdir(parents=True, exist_ok=True)

    def path_of(self, file_key: str) -> Path:
        path = (self.root / file_key).resolve()
        if self.root not in path.parents or file_key.startswith("."):
            raise FileNotFoundError(file_key)
        return path

    async def begin(self) -> Path:
        path = self.partial_dir / f"{secrets.token_hex(16)}.part"
        await trio.Path(path).touch(exist_ok=False)
        return path

    async def commit(self, partial: Path, folder: str, digest: str) -> str:
        file_key = f"{folder}/{digest[:2]}/{digest}"
        target = self.path_of(file_key)

        def publish() -> None:
            with open(partial, "rb") as f:
                os.fsync(f.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
            # The rename itself is durable once the folder is synced.
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        await trio.to_thread.run_sync(publish)
        return file_key

    async def read(self, file_key: str) -> AsyncIterator[bytes]:
        async with await trio.open_file(self.path_of(file_key), "rb") as f:
            while chunk := await f.read(CHUNK):
                yield chunk

    async def delete(self, file_key: str) -> None:
        try:
            await trio.Path(self.path_of(file_key)).unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    async def stale(self, older_than: float) -> tuple[list[str], list[Path]]:
        def scan() -> tuple[list[str], list[Path]]:
            limit = time.time() - older_than
            keys: list[str] = []
            partials: list[Path] = []
            for dirpath, _dirs, names in os.walk(self.root):
                here = Path(dirpath)
                for name in names:
                    path = here / name
                    try:
                        if path.stat().st_mtime > limit:
                            continue
                    except FileNotFoundError:
                        continue
                    if here == self.partial_dir:
                        partials.append(path)
                    else:
                        keys.append(path.relative_to(self.root).as_posix())
            return keys, partials

        return await trio.to_thread.run_sync(scan)


@dataclass
class AttachmentCounters:
    """What the metrics read (``omni.metrics``): uploads kept (files, bytes), refusals by
    reason, and what is kept now (refreshed by each clean-up pass)."""

    uploaded_files: int = 0
    uploaded_bytes: int = 0
    stored_files: int = 0
    stored_bytes: int = 0
    deleted_files: int = 0
    refused: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.refused is None:
            self.refused = {reason.value: 0 for reason in Refusal}

    def refuse(self, reason: Refusal) -> None:
        assert self.refused is not None
        self.refused[reason.value] = self.refused.get(reason.value, 0) + 1


class Links:
    """Signed links, for what a browser opens without a bearer token: download links
    (``/api/v1/attachments/<id>?expires=<unix>&signature=<hmac>``, for the pages' ``<img>`` and
    ``<a>``) and survey links (``/survey/<token>``, the signature inside the token). A link is
    minted only for someone allowed to follow it, and names when it stops working.

    One key signs them all (``[server.attachments] link_secret``, else a random one per start);
    each kind of link signs its own ``purpose`` along with its subject and expiry, so that a
    signature made for one kind never passes for another."""

    def __init__(self, secret: str | None, ttl: float) -> None:
        self._key = (secret or secrets.token_urlsafe(32)).encode()
        self.ttl = ttl

    def sign(self, purpose: str, subject: str, expires: int) -> str:
        """The signature (64 hex digits) of ``subject`` for ``purpose`` until ``expires``
        (Unix seconds)."""
        message = f"{purpose}:{subject}:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def signed(self, purpose: str, subject: str, expires: int, signature: str) -> bool:
        """Whether ``signature`` is this server's for ``subject``, ``purpose`` and ``expires``
        (whatever the time: the caller compares ``expires`` with its clock)."""
        if len(signature) != 64:
            return False
        return hmac.compare_digest(self.sign(purpose, subject, expires), signature)

    def mint(
        self, attachment_id: str, now: datetime, ttl: float | None = None
    ) -> tuple[str, datetime]:
        """A download link's path and query, and when it stops working (after ``ttl``
        seconds, by default the pages' ``link_seconds``)."""
        expires = int(now.timestamp() + (self.ttl if ttl is None else ttl))
        signature = self.sign("attachment", attachment_id, expires)
        until = datetime.fromtimestamp(expires, tz=now.tzinfo)
        return f"/api/v1/attachments/{attachment_id}?expires={expires}&signature={signature}", until

    def check(self, attachment_id: str, expires: str, signature: str, now: datetime) -> bool:
        try:
            at = int(expires)
        except ValueError:
            return False
        if at < now.timestamp():
            return False
        return self.signed("attachment", attachment_id, at, signature)


@dataclass(frozen=True)
class Upload:
    """What an upload is: where to, by whom, under what name and limits."""

    conversation_id: str
    uploaded_by: str
    name: str | None
    #: The type the client claims (its Content-Type), if a known one: checked, never trusted.
    claimed_type: str | None
    #: The request's Content-Length, when it sent one.
    declared_length: int | None
    limits: Attachments


class Uploads:
    """The upload pipeline and the clean-up job over one :class:`Store` (metadata) and one
    :class:`AttachmentStore` (bytes)."""

    def __init__(
        self,
        store: Store,
        files: AttachmentStore,
        settings: AttachmentsSettings,
        now: Callable[[], datetime],
        counters: AttachmentCounters | None = None,
    ) -> None:
        self.store = store
        self.files = files
        self.settings = settings
        self.now = now
        self.counters = counters or AttachmentCounters()
        self.links = Links(settings.link_secret, settings.link_seconds)
        self.lock = trio.Lock()
        self._decoders = trio.CapacityLimiter(DECODERS)
        Image.MAX_IMAGE_PIXELS = settings.max_pixels

    async def receive(self, upload: Upload, body: AsyncIterable[bytes]) -> Attachment:
        """Keep the file streamed in ``body`` as a pending attachment, or raise
        :class:`Refused` (counted) as early as the reason is known."""
        try:
            return await self._receive(upload, body)
        except Refused as refusal:
            self.counters.refuse(refusal.reason)
            raise

    async def _receive(self, upload: Upload, body: AsyncIterable[bytes]) -> Attachment:
        limits = upload.limits
        if not limits.enabled:
            raise Refused(Refusal.DISABLED, "this service accepts no attachments")
        max_bytes = limits.max_bytes
        if upload.declared_length is not None and upload.declared_length > max_bytes:
            raise Refused(Refusal.TOO_LARGE, f"files are limited to {max_bytes} bytes")
        files, used = await self.store.attachment_usage(upload.conversation_id)
        check_quota(
            files, used, 1, limits.max_files_per_conversation, limits.max_bytes_per_conversation
        )
        claimed = type_of_name(upload.name or "") or upload.claimed_type
        partial = await self.files.begin()
        cleaned: Path | None = None
        try:
            digest = hashlib.sha256()
            size = 0
            head = bytearray()
            mime: str | None = None
            async with await trio.open_file(partial, "wb") as out:
                async for chunk in body:
                    size += len(chunk)
                    if size > max_bytes:
                        raise Refused(Refusal.TOO_LARGE, f"files are limited to {max_bytes} bytes")
                    if mime is None:
                        head += chunk[: SNIFF_BYTES - len(head)]
                        if len(head) >= SNIFF_BYTES:
                            mime = check_type(
                                filetype.guess_mime(bytes(head)), limits.types, claimed
                            )
                    digest.update(chunk)
                    await out.write(chunk)
            if size == 0:
                raise Refused(Refusal.EMPTY, "the file is empty")
            if mime is None:
                mime = check_type(filetype.guess_mime(bytes(head)), limits.types, claimed)
            if mime in IMAGE_TYPES:
                cleaned = await self.files.begin()
                size, hexdigest = await trio.to_thread.run_sync(
                    _reencode,
                    partial,
                    cleaned,
                    mime,
                    self.settings.max_pixels,
                    limiter=self._decoders,
                )
                source = cleaned
            else:
                hexdigest, source = digest.hexdigest(), partial
            attachment = Attachment(
                id=secrets.token_urlsafe(18),
                conversation_id=upload.conversation_id,
                uploaded_by=upload.uploaded_by,
                name=clean_name(upload.name, mime),
                size=size,
                content_type=mime,
                file_key="",
                created_at=self.now(),
            )
            async with self.lock:
                # Again under the lock: two uploads at once must not both take the last place.
                files, used = await self.store.attachment_usage(upload.conversation_id)
                check_quota(
                    files,
                    used,
                    size,
                    limits.max_files_per_conversation,
                    limits.max_bytes_per_conversation,
                )
                file_key = await self.files.commit(source, limits.folder, hexdigest)
                attachment = _with_key(attachment, file_key)
                await self.store.add_attachment(attachment)
        finally:
            with trio.CancelScope(shield=True):
                for leftover in (partial, cleaned):
                    if leftover is not None:
                        await trio.Path(leftover).unlink(missing_ok=True)
        self.counters.uploaded_files += 1
        self.counters.uploaded_bytes += size
        self.counters.stored_files += 1
        self.counters.stored_bytes += size
        return attachment

    # -- the clean-up job ---------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep now, then every ``sweep_seconds``, until cancelled. It keeps no state: after
        a restart the first sweep finds whatever the last run left."""
        task_status.started()
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception(
                    "attachments: the clean-up pass failed; next one in %.0f s",
                    self.settings.sweep_seconds,
                )
            await trio.sleep(self.settings.sweep_seconds)

    async def sweep(self, orphan_age: float = ORPHAN_AGE) -> int:
        """One pass: attachments past the retention period and pending ones past their day
        are forgotten, the files nothing names any more deleted, then temporary files and
        files without a row older than ``orphan_age`` seconds. How many files were deleted."""
        now = self.now()
        days = self.settings.retention_days
        before = now - timedelta(days=days) if days is not None else None
        pending_before = now - timedelta(seconds=self.settings.pending_seconds)
        deleted = 0
        while batch := await self.store.expired_attachments(before, pending_before, 500):
            async with self.lock:
                await self.store.delete_attachments([a.id for a in batch])
                deleted += await self._delete_unused({a.file_key for a in batch})
        keys, partials = await self.files.stale(orphan_age)
        for start in range(0, len(keys), 500):
            async with self.lock:
                deleted += await self._delete_unused(set(keys[start : start + 500]))
        for path in partials:
            await trio.Path(path).unlink(missing_ok=True)
        (
            self.counters.stored_files,
            self.counters.stored_bytes,
        ) = await self.store.attachment_totals()
        self.counters.deleted_files += deleted
        if deleted or partials:
            log.info("attachments: deleted %d files and %d partial uploads", deleted, len(partials))
        return deleted

    async def _delete_unused(self, file_keys: set[str]) -> int:
        in_use = await self.store.files_in_use(sorted(file_keys))
        unused = sorted(file_keys - in_use)
        for key in unused:
            await self.files.delete(key)
        return len(unused)


def _with_key(attachment: Attachment, file_key: str) -> Attachment:
    from dataclasses import replace

    return replace(attachment, file_key=file_key)


def _reencode(source: Path, target: Path, mime: str, max_pixels: int) -> tuple[int, str]:
    """Decode the image at ``source`` (a thread's work), refuse it if it is not what its first
    bytes said or too many pixels, and write it again to ``target`` without metadata; the new
    size and SHA-256."""
    try:
        with Image.open(source, formats=[_PILLOW_FORMATS[mime]]) as image:
            frames = getattr(image, "n_frames", 1)
            check_pixels(image.width, image.height, frames, max_pixels)
            _save_clean(image, target, mime, frames)
    except Refused:
        raise
    except Image.DecompressionBombError as exc:
        raise Refused(Refusal.TOO_MANY_PIXELS, str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise Refused(
            Refusal.UNREADABLE_IMAGE, f"the image cannot be read ({type(exc).__name__})"
        ) from None
    digest = hashlib.sha256()
    size = 0
    with open(target, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


#: Image information kept when re-encoding: what a picture needs to look the same, nothing a
#: person or a script could have put there (EXIF, XMP, text chunks, comments, ICC profiles).
_KEPT_INFO = ("transparency", "duration", "loop", "background", "disposal")


def _save_clean(image: Image.Image, target: Path, mime: str, frames: int) -> None:
    keep = {k: image.info[k] for k in _KEPT_INFO if k in image.info}
    fmt = _PILLOW_FORMATS[mime]
    if frames > 1:
        first = image.copy()
        rest = []
        for index in range(1, frames):
            image.seek(index)
            rest.append(image.copy())
        for frame in (first, *rest):
            frame.info = {}
        first.save(target, fmt, save_all=True, append_images=rest, **keep)
        return
    image.load()
    # A photo's orientation lives in its EXIF: apply it before the EXIF goes.
    clean = ImageOps.exif_transpose(image) if mime == "image/jpeg" else image.copy()
    clean.info = {}
    options: dict[str, object] = dict(keep)
    if mime == "image/jpeg":
        if clean.mode not in ("RGB", "L", "CMYK"):
            clean = clean.convert("RGB")
        options["quality"] = 90
    elif mime == "image/webp":
        options["quality"] = 90
    clean.save(target, fmt, **options)
