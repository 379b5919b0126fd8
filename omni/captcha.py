"""CAPTCHA verification (F19) against a "siteverify" endpoint — the protocol reCAPTCHA, hCaptcha
and Cloudflare Turnstile share: POST ``secret`` and ``response`` as a form, read ``success``.

Rules: one HTTP client (httpx, on trio) for the server's life; a check that cannot be made — the
endpoint unreachable, too slow, or answering something else than its JSON — raises
:class:`CaptchaUnavailable`: the server then refuses the start (it fails closed) and the visitor
may try again.
"""

from __future__ import annotations

from typing import Any

import httpx

from omni.actors.ports import CaptchaUnavailable
from omni.settings import CaptchaSettings


class SiteVerify:
    """A :class:`~omni.actors.ports.CaptchaCheck` against a siteverify endpoint."""

    def __init__(self, client: httpx.AsyncClient, settings: CaptchaSettings) -> None:
        self.client = client
        self.settings = settings

    async def verify(self, response: str) -> bool:
        """True when the provider says ``response`` is a passed challenge."""
        form = {"secret": self.settings.secret, "response": response}
        try:
            reply = await self.client.post(
                self.settings.verify_url, data=form, timeout=self.settings.timeout
            )
            reply.raise_for_status()
            body: Any = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise CaptchaUnavailable(f"{type(exc).__name__}: {exc}") from None
        success = body.get("success") if isinstance(body, dict) else None
        if not isinstance(success, bool):
            raise CaptchaUnavailable("the verification endpoint answered no `success`")
        return success
