"""The pages' static assets and templates (``omni.pages.assets``, ``omni.pages.shells``),
without a server: files given as bytes, the registry built from them.

What must hold: every asset is named by the hash of the bytes served; a file's references to
other files are rewritten to their hashed names, so a change to one file changes the names of
all that lead to it; what cannot be served (a missing target, a cycle, an unknown type) is an
error at start-up; gzip is offered when it helps and decompresses to the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import re

import pytest

from omni.pages.assets import FOLDER as STATIC
from omni.pages.assets import AssetError, AssetRegistry, accepts_gzip
from omni.pages.shells import FOLDER, Raw, Template, TemplateError

HASHED = re.compile(r"^/static/(?P<stem>.+)\.(?P<hash>[0-9a-f]{10})\.(?P<ext>[a-z0-9]+)$")

MODULES = {
    "app/main.js": b'import { view } from "./view.js";\nimport "./side.js";\nview();\n',
    "app/view.js": b"export { text } from './text.js';\nexport function view() {}\n",
    "app/text.js": b"export const text = (s) => document.createTextNode(s);\n",
    "app/side.js": b"const later = () => import('./lazy.js');\n",
    "app/lazy.js": b"export default 1;\n",
}


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:10]


def test_every_asset_is_named_by_the_hash_of_what_is_served() -> None:
    assets = AssetRegistry.build({**MODULES, "logo.png": b"\x89PNG fake", "a/b.css": b"p{}"})
    for name, asset in assets.items():
        match = HASHED.match(asset.url)
        assert match, asset.url
        assert f"{match['stem']}.{match['ext']}" == name
        assert match["hash"] == sha(asset.body)
        assert assets.url(name) == asset.url
        assert assets.at(asset.url) is asset
    assert assets["logo.png"].content_type == "image/png"
    assert assets["app/main.js"].content_type == "text/javascript; charset=utf-8"
    assert assets["a/b.css"].content_type == "text/css; charset=utf-8"


def test_module_specifiers_become_the_hashed_names_of_their_targets() -> None:
    assets = AssetRegistry.build(MODULES)
    main = assets["app/main.js"].body.decode()
    assert f'from "{assets.url("app/view.js")}"' in main
    assert f'import "{assets.url("app/side.js")}"' in main
    view = assets["app/view.js"].body.decode()
    assert f"export {{ text }} from '{assets.url('app/text.js')}'" in view
    side = assets["app/side.js"].body.decode()
    assert f"import('{assets.url('app/lazy.js')}')" in side
    # Nothing relative is left for a browser to fetch by an unhashed name.
    for asset in assets.values():
        assert "./" not in asset.body.decode()
    assert assets["app/main.js"].references == ("app/view.js", "app/side.js")


def test_a_change_to_a_module_changes_the_names_of_every_module_that_leads_to_it() -> None:
    before = AssetRegistry.build(MODULES)
    after = AssetRegistry.build({**MODULES, "app/text.js": b"export const text = 2;\n"})
    changed = {name for name in MODULES if before.url(name) != after.url(name)}
    # text.js, what imports it (view.js), and what imports that (main.js) — nothing else.
    assert changed == {"app/text.js", "app/view.js", "app/main.js"}


def test_the_modules_a_page_may_preload_are_its_static_imports_dependencies_first() -> None:
    assets = AssetRegistry.build(MODULES)
    # lazy.js is imported dynamically (by side.js): left to load when it is needed.
    assert assets.imports("app/main.js") == ["app/text.js", "app/view.js", "app/side.js"]
    assert assets.imports("app/text.js") == []
    assert assets["app/side.js"].references == ("app/lazy.js",)
    assert assets["app/side.js"].static_imports == ()


def test_css_references_and_placeholders_are_rewritten() -> None:
    assets = AssetRegistry.build(
        {
            "css/site.css": (
                b'@import "./base.css";\n'
                b"a { background: url(../img/dot.svg); }\n"
                b"b { background: url('data:image/png;base64,AAAA'); }\n"
                b'c { background: url("https://cdn.example/x.png"); }\n'
                b"@font-face { src: url(/fonts/abs.woff2); }\n"
            ),
            "css/base.css": b"body { margin: 0 }\n",
            "img/dot.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            "js/icons.js": b'export const dot = "{{ asset "img/dot.svg" }}";\n',
        }
    )
    css = assets["css/site.css"].body.decode()
    assert f'@import "{assets.url("css/base.css")}"' in css
    assert f"url({assets.url('img/dot.svg')})" in css
    # Absolute, data: and other origins' URLs are left as they are.
    assert "url('data:image/png;base64,AAAA')" in css
    assert 'url("https://cdn.example/x.png")' in css
    assert "url(/fonts/abs.woff2)" in css
    assert (
        assets["js/icons.js"].body.decode()
        == f'export const dot = "{assets.url("img/dot.svg")}";\n'
    )


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            {"a.js": b'import "./b.js";', "b.js": b'import "./a.js";'},
            "cycle, so none of their hashes can be computed: a.js -> b.js -> a.js",
        ),
        ({"a.js": b'import("./a.js");'}, "computed: a.js -> a.js"),
        ({"a.js": b'import x from "./missing.js";'}, "refers to missing.js, which does not exist"),
        ({"a.js": b'import x from "../up.js";'}, "points outside the static folder"),
        ({"a.css": b"p { background: url(none.png) }"}, "none.png, which does not exist"),
        ({"a.js": b'"{{ asset "nope.js" }}"'}, "there is no such asset"),
        ({"README": b"hello"}, "not a type the pages serve"),
        ({"a.exe": b"MZ"}, "not a type the pages serve"),
        ({"a.js": b"\xff\xfe"}, "not UTF-8"),
    ],
)
def test_what_cannot_be_served_is_an_error_at_start_up(
    sources: dict[str, bytes], message: str
) -> None:
    with pytest.raises(AssetError, match=re.escape(message)):
        AssetRegistry.build(sources)


def test_unknown_names_and_urls() -> None:
    assets = AssetRegistry.build(MODULES)
    with pytest.raises(AssetError, match=re.escape("no asset 'app/nope.js'")):
        assets.url("app/nope.js")
    assert assets.at("/static/app/main.js") is None  # the logical name is no URL
    stale = assets.url("app/main.js").replace(sha(assets["app/main.js"].body), "0123456789")
    assert assets.at(stale) is None


def test_text_is_gzipped_once_when_that_is_smaller() -> None:
    big = b"export const words = [" + b'"chat", ' * 500 + b"];\n"
    assets = AssetRegistry.build({"big.js": big, "tiny.js": b"1", "x.png": b"\x89PNG" * 100})
    packed = assets["big.js"].gzipped
    assert packed is not None and len(packed) < len(big)
    assert gzip.decompress(packed) == assets["big.js"].body
    assert assets["tiny.js"].gzipped is None  # gzip would make it larger
    assert assets["x.png"].gzipped is None  # images and fonts are compressed already
    # The same file gives the same bytes at every start (no timestamp in the gzip header).
    again = AssetRegistry.build({"big.js": big})
    assert again["big.js"].gzipped == packed


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("identity", False),
        ("br", False),
        ("*", True),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("gzip;q=bogus", False),
    ],
)
def test_accept_encoding(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_the_shipped_folder_loads_and_its_shells_compile() -> None:
    assets = AssetRegistry.load(STATIC)
    assert {"webchat/main.js", "webchat/webchat.css"} <= set(assets)
    shell = Template.load("webchat.html", assets, frozenset({"lang", "data_service"}))
    page = shell.render(lang="en", data_service=Raw(""))
    assert assets.url("webchat/main.js") in page
    assert assets.url("webchat/webchat.css") in page
    assert "{{" not in page
    # No inline script or style in Omni's own markup (the CSP would refuse it anyway).
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    assert "<style" not in page and "style=" not in page
    widget = Template.load(
        "widget.js", assets, frozenset({"public_url"}), origin="https://chat.example"
    )
    assert '"https://chat.example"' in widget.render(public_url="https://chat.example")
    assert (FOLDER / "webchat.html").exists()


def test_templates_escape_values_for_where_they_go() -> None:
    assets = AssetRegistry.build({"a.js": b"1"})
    html = Template.compile(
        "t.html",
        '<p title="{{ value }}">{{ value }}</p><script src="{{ asset "a.js" }}">',
        assets,
        frozenset({"value"}),
    )
    escaped = "&quot;&gt;&lt;script&gt;x&lt;/script&gt;"
    assert html.render(value='"><script>x</script>') == (
        f'<p title="{escaped}">{escaped}</p><script src="{assets.url("a.js")}">'
    )
    assert (
        html.render(value=Raw("<b>"))
        == f'<p title="<b>"><b></p><script src="{assets.url("a.js")}">'
    )
    js = Template.compile("t.js", "const v = '{{ value }}';", assets, frozenset({"value"}))
    rendered = js.render(value="'; alert(1); '</script>")
    assert rendered == "const v = '\\u0027; alert(1); \\u0027\\u003c/script\\u003e';"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ secret }}", "t.html, line 1: unknown placeholder {{ secret }}"),
        ('\n{{ asset "nope.js" }}', "t.html, line 2: no asset 'nope.js'"),
        ('{{ lang "x" }}', "unknown placeholder"),
    ],
)
def test_a_template_with_an_unknown_placeholder_does_not_compile(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        Template.compile("t.html", text, AssetRegistry.build({}), frozenset({"lang"}))
