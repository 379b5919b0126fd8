"""The pages' static assets: every file under ``omni/pages/static/``, read once at start-up,
served under a name that carries the hash of its content, cached by browsers for a year.

Rules of this module:

* A file's logical name is its path under the folder (``webchat/main.js``); its URL is
  ``/static/<path without extension>.<hash>.<extension>`` (``/static/webchat/main.1a2b3c4d5e.js``),
  the hash being the first :data:`HASH_LENGTH` hex digits of the SHA-256 of the bytes served.
  Only those URLs exist: a logical name, an old hash or an unknown file is 404. A URL never
  changes meaning, so it may be cached forever (:data:`CACHE_FOREVER`).
* References between assets are rewritten to the hashed URLs of their targets, so a change to a
  file changes the URL of every file that refers to it, up to the page: ES module specifiers
  (``import … from "./x.js"``, ``export … from "./x.js"``, ``import "./x.js"``,
  ``import("./x.js")`` — relative ones only, with a literal string), CSS ``url(…)`` and
  ``@import`` of relative paths, and ``{{ asset "name" }}`` in any text file (a logical name
  from the folder's root). Hashes are therefore computed dependencies first; a reference to a
  file that does not exist, or a cycle of references, is an :class:`AssetError` at start-up —
  never a broken page.
* Only files whose type is known (:data:`CONTENT_TYPES`) may be in the folder, so nothing is
  ever served with a guessed type. Text files are UTF-8.
* Compressible files are gzipped once, at start-up; the compressed body is served to clients
  that accept it (:func:`accepts_gzip`), and only when it is smaller.
* The registry is a plain immutable object: no I/O after :meth:`AssetRegistry.load`.
"""

from __future__ import annotations

import gzip
import hashlib
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: The folder of the assets.
FOLDER = Path(__file__).parent / "static"
#: Hex digits of the content hash in an asset's URL (40 bits: a collision between two
#: versions of one file is not a concern).
HASH_LENGTH = 10
#: The prefix of every asset URL.
PREFIX = "/static/"
#: Cache-Control of an asset: its URL names its content, so it never needs revalidating.
CACHE_FOREVER = "public, max-age=31536000, immutable"

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",  # the licences of vendored libraries
}
#: Extensions whose files are UTF-8 text: references are rewritten, and they are gzipped.
TEXT = frozenset({".js", ".mjs", ".css", ".json", ".svg", ".txt"})
#: Extensions whose references are ES module specifiers, and CSS references.
_SCRIPT = frozenset({".js", ".mjs"})
_STYLE = frozenset({".css"})

#: A relative module specifier (``./x.js``, ``../x.js``) in quotes.
_RELATIVE = r"""(?P<q>["'])(?P<spec>\.\.?/[^"'\r\n]+)(?P=q)"""
#: ``… from "./x.js"`` (static import and re-export), ``import "./x.js"``, ``import("./x.js")``.
_MODULE_REFERENCE = re.compile(
    r"(?<![\w$.])(?:(?P<dynamic>import\s*\(\s*)|from\s*|import\s*)" + _RELATIVE,
)
#: ``url(x.png)``, ``url("./x.png")``, ``@import "x.css"`` — relative paths only (no scheme,
#: no leading slash, no fragment-only or data: URL).
_STYLE_REFERENCE = re.compile(
    r"""(?:url\(\s*(?P<q1>["']?)(?P<url>(?![a-zA-Z][\w+.-]*:|/|#)[^"'()\s]+)(?P=q1)\s*\)"""
    r"""|@import\s+(?P<q2>["'])(?P<imp>(?![a-zA-Z][\w+.-]*:|/|#)[^"'\r\n]+)(?P=q2))"""
)
#: ``{{ asset "webchat/main.js" }}``: the URL of an asset, by its logical name.
ASSET_PLACEHOLDER = re.compile(r"""\{\{\s*asset\s+"(?P<name>[^"{}]+)"\s*\}\}""")


class AssetError(Exception):
    """The static folder cannot be served as it is (raised at start-up)."""


@dataclass(frozen=True)
class Asset:
    #: The logical name: the path under the static folder, with ``/``.
    name: str
    #: The hashed URL it is served at.
    url: str
    content_type: str
    body: bytes
    #: The gzipped body, when the type compresses and it came out smaller.
    gzipped: bytes | None
    #: Logical names of the assets it refers to (directly), in order of appearance.
    references: tuple[str, ...]
    #: Those of them it imports statically (a module needs them before it runs).
    static_imports: tuple[str, ...] = ()


class AssetRegistry(Mapping[str, Asset]):
    """The assets by logical name; :meth:`url` resolves one, :meth:`at` finds one by URL."""

    def __init__(self, assets: Mapping[str, Asset]) -> None:
        self._assets = dict(assets)
        self._by_url = {asset.url: asset for asset in self._assets.values()}

    @classmethod
    def load(cls, folder: Path) -> AssetRegistry:
        """Every file under ``folder`` (hidden ones aside), hashed and rewritten; an
        :class:`AssetError` names the file at fault."""
        sources: dict[str, bytes] = {}
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            name = relative.as_posix()
            sources[name] = path.read_bytes()
        return cls.build(sources)

    @classmethod
    def build(cls, sources: Mapping[str, bytes]) -> AssetRegistry:
        """The registry of files given as ``{logical name: content}``."""
        texts: dict[str, str] = {}
        references: dict[str, list[str]] = {}
        static_imports: dict[str, list[str]] = {}
        for name, content in sources.items():
            if _extension(name) not in CONTENT_TYPES:
                known = ", ".join(sorted(CONTENT_TYPES))
                raise AssetError(f"{name}: not a type the pages serve (known: {known})")
            if _extension(name) in TEXT:
                try:
                    texts[name] = content.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise AssetError(f"{name}: not UTF-8 ({exc})") from None
                references[name], static_imports[name] = _references(name, texts[name], sources)
            else:
                references[name], static_imports[name] = [], []
        assets: dict[str, Asset] = {}
        for name in _dependencies_first(references):
            if name in texts:
                body = _rewrite(name, texts[name], assets).encode("utf-8")
            else:
                body = sources[name]
            assets[name] = _asset(
                name,
                body,
                tuple(dict.fromkeys(references[name])),
                tuple(dict.fromkeys(static_imports[name])),
            )
        return cls(assets)

    # -- Mapping -------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Asset:
        return self._assets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._assets)

    def __len__(self) -> int:
        return len(self._assets)

    # -- look-ups ------------------------------------------------------------------------------

    def url(self, name: str) -> str:
        """The URL of the asset ``name`` (``webchat/main.js``); :class:`AssetError` when there
        is none."""
        asset = self._assets.get(name)
        if asset is None:
            raise AssetError(f"no asset {name!r} in the static folder")
        return asset.url

    def at(self, url: str) -> Asset | None:
        """The asset served at ``url`` (a path, ``/static/…``), if any."""
        return self._by_url.get(url)

    def imports(self, name: str) -> list[str]:
        """The modules ``name`` imports statically, transitively, dependencies first (``name``
        excluded): what a page may preload with it. Dynamic imports are left to load when
        they are needed."""
        seen: dict[str, None] = {}

        def visit(current: str) -> None:
            for reference in self[current].static_imports:
                if reference not in seen:
                    visit(reference)
                    seen[reference] = None

        self.url(name)  # an unknown name is an error here too
        visit(name)
        seen.pop(name, None)
        return list(seen)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether a request's ``Accept-Encoding`` allows a gzipped body (RFC 9110 §12.5.3)."""
    if not accept_encoding:
        return False
    named: float | None = None
    anything: float | None = None
    for part in accept_encoding.split(","):
        coding, _, parameters = part.strip().partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            named = quality
        elif coding == "*":
            anything = quality
    if named is not None:
        return named > 0
    return anything is not None and anything > 0


def _extension(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def _resolve(name: str, reference: str) -> str:
    """A relative reference of ``name`` as a logical name (none beyond the folder)."""
    target = posixpath.normpath(posixpath.join(posixpath.dirname(name), reference))
    if target.startswith("../") or target == "..":
        raise AssetError(f"{name}: {reference!r} points outside the static folder")
    return target


def _references(name: str, text: str, sources: Mapping[str, bytes]) -> tuple[list[str], list[str]]:
    """What ``name`` refers to, and which of those it imports statically."""
    found = [_placeholder_target(name, m, sources) for m in ASSET_PLACEHOLDER.finditer(text)]
    static: list[str] = []
    extension = _extension(name)
    if extension in _SCRIPT:
        for match in _MODULE_REFERENCE.finditer(text):
            found.append(_existing(name, match["spec"], sources))
            if match["dynamic"] is None:
                static.append(found[-1])
    elif extension in _STYLE:
        for match in _STYLE_REFERENCE.finditer(text):
            found.append(_existing(name, match["url"] or match["imp"], sources))
    return found, static


def _placeholder_target(name: str, match: re.Match[str], sources: Mapping[str, bytes]) -> str:
    target = match["name"]
    if target not in sources:
        raise AssetError(f"{name}: {{{{ asset {target!r} }}}}: there is no such asset")
    return target


def _existing(name: str, reference: str, sources: Mapping[str, bytes]) -> str:
    target = _resolve(name, reference)
    if target not in sources:
        raise AssetError(f"{name}: {reference!r} refers to {target}, which does not exist")
    return target


def _dependencies_first(references: Mapping[str, list[str]]) -> list[str]:
    """Every name after the names it refers to; :class:`AssetError` on a cycle."""
    order: list[str] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssetError(
                "assets refer to each other in a cycle, so none of their hashes can be "
                f"computed: {' -> '.join(cycle)}"
            )
        path.append(name)
        for reference in references[name]:
            visit(reference)
        path.pop()
        done.add(name)
        order.append(name)

    for name in sorted(references):
        visit(name)
    return order


def _rewrite(name: str, text: str, done: Mapping[str, Asset]) -> str:
    """``text`` with every reference replaced by its target's hashed URL."""

    def placeholder(match: re.Match[str]) -> str:
        return done[match["name"]].url

    text = ASSET_PLACEHOLDER.sub(placeholder, text)
    extension = _extension(name)
    if extension in _SCRIPT:

        def module(match: re.Match[str]) -> str:
            url = done[_resolve(name, match["spec"])].url
            start, end = match.span("spec")
            whole = match.group(0)
            offset = match.start()
            return whole[: start - offset] + url + whole[end - offset :]

        return _MODULE_REFERENCE.sub(module, text)
    if extension in _STYLE:

        def style(match: re.Match[str]) -> str:
            group = "url" if match["url"] else "imp"
            url = done[_resolve(name, match[group])].url
            start, end = match.span(group)
            whole = match.group(0)
            offset = match.start()
            return whole[: start - offset] + url + whole[end - offset :]

        return _STYLE_REFERENCE.sub(style, text)
    return text


def _asset(
    name: str, body: bytes, references: tuple[str, ...], static_imports: tuple[str, ...]
) -> Asset:
    extension = _extension(name)
    digest = hashlib.sha256(body).hexdigest()[:HASH_LENGTH]
    url = f"{PREFIX}{name[: -len(extension)]}.{digest}{extension}"
    gzipped = None
    if extension in TEXT:
        # mtime=0: the same file compresses to the same bytes on every start.
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    return Asset(name, url, CONTENT_TYPES[extension], body, gzipped, references, static_imports)
