"""Attachments (F11): which types Omni knows, what an upload may be, and how a file is served.

Rules of this module:

* A file's type is what its **content** says (its first bytes, read by the edge), never its
  name nor the client's ``Content-Type``. Only the types of :data:`KNOWN_TYPES` can be allowed
  by a service: each has a signature a detector recognises, so nothing is taken on trust. Text
  formats with no signature (HTML, SVG, plain text, scripts) are not among them: they cannot be
  told apart from a page that runs script in Omni's origin.
* Only raster images (:data:`INLINE_TYPES`) are ever served inline; everything else downloads
  (``Content-Disposition: attachment``).
* Each refusal has a stable :class:`Refusal` code: the problem type of the HTTP answer and the
  ``reason`` label of the metric.
* Pure functions and values only: the edge (``omni.attachments``) reads, writes and decodes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

#: The types a service may allow, by MIME type: what a content detector recognises from the
#: first bytes. Images are decoded and re-encoded (metadata stripped) before they are kept.
KNOWN_TYPES: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "application/gzip": "gz",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/x-wav": "wav",
    "video/mp4": "mp4",
    "video/webm": "webm",
}

#: Raster images: decoded, checked for their pixel count, re-encoded, and shown inline.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
INLINE_TYPES = IMAGE_TYPES

#: The largest image Omni decodes, in pixels (all frames of an animation together): a small
#: file may declare a huge canvas (a "pixel flood") whose decoding would take gigabytes.
DEFAULT_MAX_PIXELS = 40_000_000

#: How many bytes a detector needs to recognise every known type.
SNIFF_BYTES = 8192


class Refusal(StrEnum):
    """Why an upload was refused: the problem type (``https://omni.dev/problems/<code>``) and
    the metric's ``reason``."""

    DISABLED = "attachments-disabled"
    TOO_LARGE = "attachment-too-large"
    EMPTY = "attachment-empty"
    TYPE_NOT_ALLOWED = "attachment-type-not-allowed"
    UNKNOWN_TYPE = "attachment-type-unknown"
    TYPE_MISMATCH = "attachment-type-mismatch"
    UNREADABLE_IMAGE = "attachment-image-unreadable"
    TOO_MANY_PIXELS = "attachment-too-many-pixels"
    QUOTA = "attachment-quota-exceeded"
    CLOSED = "conversation-closed"

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS = {
    Refusal.DISABLED: 403,
    Refusal.TOO_LARGE: 413,
    Refusal.EMPTY: 422,
    Refusal.TYPE_NOT_ALLOWED: 415,
    Refusal.UNKNOWN_TYPE: 415,
    Refusal.TYPE_MISMATCH: 415,
    Refusal.UNREADABLE_IMAGE: 422,
    Refusal.TOO_MANY_PIXELS: 422,
    Refusal.QUOTA: 409,
    Refusal.CLOSED: 409,
}


class Refused(Exception):
    """An upload the rules refuse: ``reason`` and a sentence for the person."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def check_type(detected: str | None, allowed: tuple[str, ...], claimed: str | None) -> str:
    """The type to keep a file as, from what its content was ``detected`` as: it must be
    known and ``allowed``; when the client ``claimed`` a known type (its name's extension or
    its ``Content-Type``) that the content contradicts, the upload is refused — a file
    pretending to be what it is not is an attack or a mistake, either way not kept."""
    if detected is None or detected not in KNOWN_TYPES:
        raise Refused(
            Refusal.UNKNOWN_TYPE,
            "the file's content is not of a type Omni recognises (allowed: "
            + ", ".join(allowed)
            + ")",
        )
    if claimed is not None and claimed in KNOWN_TYPES and claimed != detected:
        raise Refused(
            Refusal.TYPE_MISMATCH,
            f"the file says it is {claimed} but its content is {detected}",
        )
    if detected not in allowed:
        raise Refused(Refusal.TYPE_NOT_ALLOWED, f"{detected} files are not allowed here")
    return detected


def type_of_name(name: str) -> str | None:
    """The known type a file name's extension claims (None: no known extension)."""
    extension = name.rpartition(".")[2].lower() if "." in name else ""
    aliases = {"jpeg": "image/jpeg", "jpe": "image/jpeg"}
    if extension in aliases:
        return aliases[extension]
    for mime, known in KNOWN_TYPES.items():
        if extension == known:
            return mime
    return None


def check_pixels(width: int, height: int, frames: int, max_pixels: int) -> None:
    """Refuse an image whose decoding would exceed ``max_pixels`` (all frames together)."""
    if width <= 0 or height <= 0:
        raise Refused(Refusal.UNREADABLE_IMAGE, "the image has no pixels")
    if width * height * max(frames, 1) > max_pixels:
        raise Refused(
            Refusal.TOO_MANY_PIXELS,
            f"the image is {width} x {height} pixels"
            + (f" in {frames} frames" if frames > 1 else "")
            + f"; at most {max_pixels} pixels are accepted",
        )


def check_quota(files: int, size: int, adding: int, max_files: int, max_bytes: int) -> None:
    """Refuse one more file of ``adding`` bytes to a conversation holding ``files`` files of
    ``size`` bytes, beyond its quota."""
    if files + 1 > max_files:
        raise Refused(Refusal.QUOTA, f"a conversation may carry at most {max_files} files")
    if size + adding > max_bytes:
        raise Refused(Refusal.QUOTA, f"a conversation may carry at most {max_bytes} bytes of files")


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
MAX_NAME = 200


def clean_name(name: str | None, mime: str) -> str:
    """A file name safe to show and to put in a header: no path, no control or reserved
    characters, at most :data:`MAX_NAME` characters, and the extension of its real type."""
    base = unicodedata.normalize("NFC", (name or "").replace("\\", "/").rpartition("/")[2])
    base = _UNSAFE.sub("_", base).strip(" .")
    stem = base.rpartition(".")[0] if "." in base else base
    stem = stem[: MAX_NAME - 10] or "file"
    return f"{stem}.{KNOWN_TYPES[mime]}"


def disposition(name: str, mime: str) -> str:
    """The ``Content-Disposition`` a file is served with: ``inline`` only for raster images;
    the name in RFC 6266 form (an ASCII fallback and the UTF-8 name)."""
    kind = "inline" if mime in INLINE_TYPES else "attachment"
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    quoted = "".join(
        ch if ch.isascii() and (ch.isalnum() or ch in "-._~") else _percent(ch) for ch in name
    )
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def _percent(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode())


@dataclass(frozen=True, slots=True)
class Attachment:
    """An uploaded file's metadata. ``pending`` until a message carries it (``claimed_at``);
    pending ones are forgotten after a day. ``file_key`` names its content in the file store
    (content-addressed: two uploads of the same bytes share one file)."""

    id: str
    conversation_id: str
    #: Who uploaded it: ``visitor`` or ``operator:<id>``.
    uploaded_by: str
    name: str
    size: int
    content_type: str
    file_key: str
    created_at: datetime
    claimed_at: datetime | None = None

    @property
    def pending(self) -> bool:
        return self.claimed_at is None
