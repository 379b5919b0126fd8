"""Signed visitor identity (F8): who a logged-in visitor is, as vouched for by the embedding site.

Rules:

* The site's back end signs a **JWT with HS256** (any JWT library does it) with the service's
  ``identity_secret``; the page passes it to the widget, which sends it in ``start`` as
  ``identity``. PyJWT checks the signature; only HS256 is accepted (never ``none``, never an
  algorithm the token names for itself).
* Claims: ``name`` (required), ``email``, ``phone`` (optional), ``exp`` (required, POSIX
  seconds), ``service_id`` (optional: when present the token is good for that service only).
  ``exp`` is checked against the caller's clock (the server's :class:`~omni.clock.Clock`), not
  the machine's, so virtual time drives it like everything else.
* The result is the signed claims; the domain (``omni.domain.admission.identify``) makes the
  visitor of them, marked ``verified``, ignoring any name, e-mail or phone the page typed in.
"""

from __future__ import annotations

from datetime import datetime

import jwt

#: Clock skew tolerated on ``exp``, seconds.
LEEWAY = 30.0
LIMITS = {"name": 200, "email": 320, "phone": 64}


class IdentityError(ValueError):
    """The identity is not one to trust; the message says why (it goes to the client)."""


def verify_identity(token: str, secret: str, service_id: int, now: datetime) -> dict[str, str]:
    """The signed claims the visitor is identified by (``name``, and ``email``, ``phone`` when
    signed); :class:`IdentityError` when the token is not one to trust."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp"], "verify_exp": False, "verify_aud": False},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise IdentityError(f"the identity has no `{exc.claim}` claim") from None
    except jwt.InvalidTokenError as exc:
        raise IdentityError(f"the identity is not valid: {exc}") from None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdentityError("the identity's `exp` must be a number (POSIX seconds)")
    if exp + LEEWAY <= now.timestamp():
        raise IdentityError("the identity has expired")
    bound = claims.get("service_id")
    if bound is not None and bound != service_id:
        raise IdentityError(f"the identity is for service {bound}, not {service_id}")
    visitor: dict[str, str] = {}
    for field, limit in LIMITS.items():
        value = claims.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise IdentityError(f"the identity's `{field}` must be text of 1-{limit} characters")
        visitor[field] = value
    if "name" not in visitor:
        raise IdentityError("the identity has no `name` claim")
    return visitor
