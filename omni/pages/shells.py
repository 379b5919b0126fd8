"""The pages' HTML shells and the embed script: constants of Omni's own, with placeholders.

Rules of this module:

* A template is a file of ``omni/pages/templates/``, compiled once, at start-up. Its
  placeholders are ``{{ asset "name" }}`` — the URL of a static asset (:mod:`omni.pages.assets`)
  — ``{{ preload "name" }}`` — in HTML, a ``<link rel="modulepreload">`` for each module the
  asset ``name`` imports, so the browser fetches them all at once instead of one level at a
  time — and the names of the values a caller gives each time it renders (``{{ lang }}``),
  declared when it is compiled. Any other placeholder, or an unknown asset, is an error at
  start-up.
* Values are escaped for where they go: for HTML text and attributes in ``.html`` templates,
  for the inside of a string literal in ``.js`` ones. :class:`Raw` is the one exception: a
  fragment of markup the pages build from checked values (an attribute with a whole number).
* Nothing a visitor sends reaches a template. The values are the server's settings (checked
  URLs) and choices from fixed sets (a language, a service id that is a whole number).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omni.pages.assets import AssetError, AssetRegistry

#: The folder of the templates.
FOLDER = Path(__file__).parent / "templates"

_PLACEHOLDER = re.compile(r"""\{\{\s*(?P<word>[a-z_]+)(?:\s+"(?P<arg>[^"{}]+)")?\s*\}\}""")


class TemplateError(Exception):
    """A template cannot be compiled (raised at start-up)."""


class Raw(str):
    """Markup put into a template as it is: only for fragments the pages build themselves."""

    __slots__ = ()


def escape_html(value: str) -> str:
    return value if isinstance(value, Raw) else html.escape(value, quote=True)


def escape_js_string(value: str) -> str:
    """``value`` as the inside of a JavaScript string literal (either quote), safe in an HTML
    ``<script>`` too."""
    if isinstance(value, Raw):
        return value
    quoted = json.dumps(value, ensure_ascii=True)[1:-1]
    return (
        quoted.replace("'", "\\u0027")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


@dataclass(frozen=True)
class Template:
    """A compiled template: literal text between the names of the values it takes."""

    name: str
    #: Literal text at even indexes, the names of values at odd ones.
    parts: tuple[str, ...]
    escape: Callable[[str], str]

    @classmethod
    def compile(
        cls,
        name: str,
        text: str,
        assets: AssetRegistry,
        values: frozenset[str] = frozenset(),
        *,
        origin: str = "",
    ) -> Template:
        """Compile ``text`` (the template ``name``), resolving its assets now; ``values`` are
        the names :meth:`render` will be given. ``origin`` is put before asset URLs (for a
        script that runs on other sites' pages)."""
        is_html = name.endswith(".html")
        parts: list[str] = []
        literal: list[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            literal.append(text[position : match.start()])
            position = match.end()
            word, argument = match["word"], match["arg"]
            try:
                if word == "asset" and argument is not None:
                    url = origin + assets.url(argument)
                    literal.append(escape_html(url) if is_html else escape_js_string(url))
                elif word == "preload" and argument is not None and is_html:
                    literal.append(
                        "".join(
                            f'<link rel="modulepreload" href="{escape_html(assets.url(module))}">'
                            for module in assets.imports(argument)
                        )
                    )
                elif word in values and argument is None:
                    parts += ["".join(literal), word]
                    literal = []
                else:
                    raise TemplateError(f"unknown placeholder {match.group(0)}")
            except (AssetError, TemplateError) as exc:
                line = text.count("\n", 0, match.start()) + 1
                raise TemplateError(f"{name}, line {line}: {exc}") from None
        literal.append(text[position:])
        parts.append("".join(literal))
        return cls(name, tuple(parts), escape_html if is_html else escape_js_string)

    @classmethod
    def load(
        cls,
        name: str,
        assets: AssetRegistry,
        values: frozenset[str] = frozenset(),
        *,
        origin: str = "",
        folder: Path = FOLDER,
    ) -> Template:
        """The template file ``name`` of ``folder``, compiled."""
        text = (folder / name).read_text(encoding="utf-8")
        return cls.compile(name, text, assets, values, origin=origin)

    def render(self, **values: str) -> str:
        """The text, with ``values`` (every name the template takes) escaped into it."""
        out = [self.parts[0]]
        for index in range(1, len(self.parts), 2):
            out += [self.escape(values[self.parts[index]]), self.parts[index + 1]]
        return "".join(out)
