"""CAPTCHA verification (F19) against a "siteverify" endpoint — the protocol reCAPTCHA, hCaptcha
and Cloudflare Turnstile share: POST ``secret``, ``response`` (and ``remoteip``) as a form, read
``success``.

Rules:

* A check that cannot be made — the endpoint unreachable, too slow, or answering something else
  than its JSON — raises :class:`CaptchaUnavailable`: the server then refuses the start (it fails
  closed) and the visitor may try again.
* Each check is a call to somebody else's server, caused by a stranger: one client address may
  cause ``captchas_per_minute`` of them (:class:`CaptchaLimited` beyond), and all of them share
  one small connection pool of their own, so a flood of starts can neither exhaust the
  provider's quota nor the server's sockets.
* A provider that is down fails every check: that is logged once per :data:`LOG_INTERVAL` with
  the count, not once per visitor.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from types import TracebackType
from typing import Any

import httpx
import trio

from omni.actors.ports import CaptchaLimited, CaptchaUnavailable
from omni.limits import Keyed, TokenBucket
from omni.settings import CaptchaSettings

log = logging.getLogger(__name__)

#: Connections to the provider at most, whatever the number of visitors.
POOL = 8
#: Seconds between two log lines about failing checks.
LOG_INTERVAL = 60.0


class SiteVerify:
    """A :class:`~omni.actors.ports.CaptchaCheck` against a siteverify endpoint, with its own
    HTTP client (``async with``: closed with it)."""

    def __init__(self, settings: CaptchaSettings, per_minute: int = 10) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
            timeout=settings.timeout,
        )
        self._per_client: Keyed[str, TokenBucket] = Keyed(
            lambda: TokenBucket(per_minute / 60, per_minute, trio.current_time())
        )
        #: Failed checks not yet logged, and when the last log line was written.
        self._unlogged = 0
        self._logged_at = -math.inf

    async def __aenter__(self) -> SiteVerify:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.client.aclose()

    async def verify(self, response: str, client: str | None = None) -> bool:
        """True when the provider says ``response`` is a passed challenge; ``client`` is the
        visitor's address (limited per address, and told to the provider)."""
        form = {"secret": self.settings.secret, "response": response}
        if client is not None:
            wait = self._per_client[client].take(trio.current_time())
            if wait is not None:
                raise CaptchaLimited(wait)
            if _is_ip(client):
                form["remoteip"] = client
        try:
            reply = await self.client.post(self.settings.verify_url, data=form)
            reply.raise_for_status()
            body: Any = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unavailable(f"{type(exc).__name__}: {exc}") from None
        success = body.get("success") if isinstance(body, dict) else None
        if not isinstance(success, bool):
            raise self._unavailable("the verification endpoint answered no `success`")
        return success

    def _unavailable(self, reason: str) -> CaptchaUnavailable:
        self._unlogged += 1
        now = trio.current_time()
        if now - self._logged_at >= LOG_INTERVAL:
            log.warning(
                "CAPTCHA checks failing (%d since the last report): %s",
                self._unlogged,
                reason,
            )
            self._unlogged, self._logged_at = 0, now
        return CaptchaUnavailable(reason)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
