"""The headers that keep the pages safe: the Content-Security-Policy of each page, and the
few that go with it (docs/pages.md says why each is there).

Rules of this module:

* The policy allows Omni's own origin and nothing else, except what the page's configuration
  names: the websocket origin it connects to, the https origins of configured images, the
  CAPTCHA provider a shown service asks for. No inline script or style, ever.
* ``frame-ancestors`` says who may embed the page: a service's ``allowed_origins`` (F18; ``*``
  when it lists none, as then any page may embed it), Omni's own origin for a page of no
  service.
* Whatever comes from configuration is checked before it is written into a header: an origin
  that is not one (a stray space or ``;`` would add a directive) is left out.
* Pure: the page's services and the server's settings are given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from omni.domain.model import Service
from omni.settings import CaptchaSettings

#: Sent with every page: the full URL to Omni's own origin, only the origin to others — and
#: the origin is what CAPTCHA providers check a site key against.
REFERRER_POLICY = "strict-origin-when-cross-origin"

#: What each CAPTCHA provider's widget loads beyond its script's origin (their documentation's
#: CSP advice). Turnstile needs only its own origin, for the script and its frame.
CAPTCHA_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "turnstile": {},
    "hcaptcha": {
        directive: ("https://hcaptcha.com", "https://*.hcaptcha.com")
        for directive in ("script-src", "frame-src", "style-src", "connect-src")
    },
    "recaptcha": {
        "script-src": ("https://www.google.com/recaptcha/", "https://www.gstatic.com/recaptcha/"),
        "frame-src": ("https://www.google.com/recaptcha/",),
    },
}

#: An origin as a CSP source may name it: scheme, host (``*.`` allowed), optional port.
_ORIGIN = re.compile(r"^https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:([0-9]{1,5}|\*))?$")
#: A host and port of an image URL.
_NETLOC = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?$")


def origin_of(url: str) -> str:
    """The origin of a URL the settings checked (``ws://host:port/path`` → ``ws://host:port``)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def image_origin(reference: str) -> str | None:
    """The origin a configured image must be allowed from: an absolute https URL's; None for
    a path on Omni (``'self'``), a ``data:`` URL, or anything else (which is then not shown)."""
    parts = urlsplit(reference.strip())
    if parts.scheme.lower() != "https" or not _NETLOC.match(parts.netloc):
        return None
    return f"https://{parts.netloc.lower()}"


def frame_ancestors(service: Service | None) -> str:
    """Who may embed a page of ``service`` (None: a page of no service)."""
    if service is None:
        return "'self'"
    if not service.allowed_origins:
        return "*"
    valid = [o for o in service.allowed_origins if _ORIGIN.match(o)]
    # Listed origins of which none is an origin: nobody may embed it (as nobody could start).
    return " ".join(dict.fromkeys(valid)) or "'none'"


def content_security_policy(
    *,
    ws_url: str | None,
    services: Iterable[Service],
    logo: str,
    captcha: CaptchaSettings | None,
    ancestors: str,
) -> str:
    """The policy of a page that shows ``services`` (their avatars, their CAPTCHA) and the
    installation's ``logo``, connects to ``ws_url`` (None: to no websocket) and may be
    embedded by ``ancestors``."""
    shown = list(services)
    sources: dict[str, list[str]] = {
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'", *([origin_of(ws_url)] if ws_url is not None else [])],
        "frame-src": [],
    }
    images = [logo, *(s.avatar.image for s in shown if s.avatar is not None)]
    sources["img-src"] += [o for o in map(image_origin, images) if o is not None]
    if captcha is not None and captcha.for_pages and any(s.captcha for s in shown):
        assert captcha.provider is not None and captcha.script_url is not None
        provider = origin_of(captcha.script_url)
        sources["script-src"].append(provider)
        sources["frame-src"].append(provider)
        for directive, extra in CAPTCHA_SOURCES[captcha.provider].items():
            sources[directive] += extra
    directives = ["default-src 'none'"]
    directives += [
        f"{directive} {' '.join(dict.fromkeys(values))}"
        for directive, values in sources.items()
        if values
    ]
    directives += ["base-uri 'none'", "form-action 'self'", f"frame-ancestors {ancestors}"]
    return "; ".join(directives)


def page_headers(policy: str) -> dict[str, str]:
    """The security headers of a page with the Content-Security-Policy ``policy``."""
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": REFERRER_POLICY,
        # Only a top-level page has an opener: inside an iframe (the embed) this is ignored.
        "Cross-Origin-Opener-Policy": "same-origin",
    }
