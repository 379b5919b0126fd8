"""The constrained values configuration entities are made of: ids, keys, names, texts, colours,
durations.

Rules: each constraint is written once, here, as a ``msgspec.Meta`` annotation. msgspec checks
it wherever an entity is decoded — the TOML file, an admin API body, a stored body — names the
offending field in its error (``... - at `$.services[0].timers.queue_timeout```), and puts it in
the JSON Schema of the OpenAPI document. What a schema cannot say — that a secret is hard to
guess — is one function here (:func:`secret_weakness`), called by the types that carry one.
Python code that builds an entity directly is trusted (tests, the simulator); every way in from
outside goes through a decoder.
"""

from __future__ import annotations

import math
import string
from typing import Annotated

import msgspec

#: A numeric id (services are addressed by it in the widget URL: ``/webchat?service=25``).
Id = Annotated[int, msgspec.Meta(ge=1, le=2_147_483_647)]
#: A textual id: schedules, API tokens, survey questions.
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
#: What people read as a name.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
#: A text shown to visitors (greetings, closing messages).
Text = Annotated[str, msgspec.Meta(max_length=4000)]
#: A URL or path of an image (logo, avatar).
ImageRef = Annotated[str, msgspec.Meta(max_length=2000)]
#: A page origin a service may be embedded on, e.g. ``https://shop.example``.
Origin = Annotated[str, msgspec.Meta(max_length=300)]
#: ``#rrggbb``.
Colour = Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}$")]
#: A deadline in seconds: more than nothing, at most a week.
Seconds = Annotated[float, msgspec.Meta(gt=0, le=7 * 86_400)]
#: A secret an administrator sends (an operator's console token, an API token).
Secret = Annotated[str, msgspec.Meta(min_length=8, max_length=200)]
#: What a configured secret must reach (DESIGN §10): estimated bits of entropy, and distinct
#: characters (so that a long run of few characters does not pass for a strong one).
SECRET_BITS = 128
SECRET_DISTINCT = 10
#: The character classes of the estimate and their sizes; any other character is one of 33.
_CLASSES = (
    (frozenset(string.ascii_lowercase), 26),
    (frozenset(string.ascii_uppercase), 26),
    (frozenset(string.digits), 10),
)
_OTHER = 33  # printable ASCII punctuation and the space


def secret_weakness(secret: str) -> str | None:
    """Why ``secret`` is too easy to guess, or None when it is strong enough: it needs
    :data:`SECRET_DISTINCT` distinct characters, and :data:`SECRET_BITS` of estimated entropy —
    its length times log2 of the alphabet its characters span, the union of the classes present
    (lower case 26, upper case 26, digits 10, anything else 33)."""
    distinct = frozenset(secret)
    if len(distinct) < SECRET_DISTINCT:
        plural = "s" if len(distinct) != 1 else ""
        return f"{len(distinct)} distinct character{plural}, at least {SECRET_DISTINCT} are needed"
    alphabet = sum(size for chars, size in _CLASSES if distinct & chars)
    if distinct.difference(*(chars for chars, _ in _CLASSES)):
        alphabet += _OTHER
    bits = len(secret) * math.log2(alphabet)
    if bits < SECRET_BITS:
        return f"about {bits:.0f} bits of entropy, at least {SECRET_BITS} are needed"
    return None


#: A key that signs or verifies (the service's identity secret): at least 256 bits of text.
SigningKey = Annotated[str, msgspec.Meta(min_length=32, max_length=500)]
#: Local wall time ``HH:MM`` (``24:00`` only as the end of an interval).
WallTime = Annotated[str, msgspec.Meta(pattern=r"^\d{1,2}:\d{2}$")]
