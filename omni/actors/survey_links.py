"""Links to a conversation's survey page, ``/survey/<token>`` (issue 17): what a channel that
cannot show the survey itself (a messaging app) sends with its closing message, and what an
operator may send by hand.

Rules of this module:

* A token is ``<conversation id>.<expires>.<signature>``: the server's signature (the one
  signer of its links, :class:`~omni.actors.ports.LinkSigner`, for the purpose ``survey``) of
  the conversation's id and of the instant the link stops working (Unix seconds). Nothing is
  stored for a link: the signature proves that the server offered this conversation's survey
  by link; whether the survey still waits for an answer is the conversation's state (the
  store), decided by the domain (:func:`omni.domain.conversation.survey_by_link`).
* A link stops working at the survey's deadline (the service's ``survey_link_timeout`` after
  the conversation ended), so the same conversation gets the same link however often it is
  asked for.
* Whatever a token says is checked before it is believed: its shape, then its signature, then
  its expiry. A token this server did not sign is ``invalid`` — never a crash, and never a
  hint of which conversations exist.
* No clock: whether a link has expired is the caller's to say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from omni.actors.ports import LinkSigner
from omni.domain.conversation import SurveyRefused

#: The path of the survey page, under the server's public origin.
PATH = "/survey/"
#: What a token is made of (a conversation id is a UUID; an expiry fits in 11 digits until
#: the year 5138); a longer one is not even looked at.
_TOKEN = re.compile(
    r"^(?P<id>[A-Za-z0-9_-]{1,64})\.(?P<expires>[0-9]{1,11})\.(?P<sig>[0-9a-f]{64})$"
)
MAX_TOKEN = 160


@dataclass(frozen=True)
class SurveyLink:
    """A link to a survey page: its absolute URL, and when it stops working."""

    url: str
    expires_at: datetime


class SurveyLinks:
    """Mints and reads survey links with ``signer``, for pages served at ``page_url`` (the
    server's public origin)."""

    PURPOSE = "survey"

    def __init__(self, signer: LinkSigner, page_url: str) -> None:
        self._signer = signer
        self.page_url = page_url

    def mint(self, conversation_id: str, until: datetime) -> SurveyLink:
        """The link to the conversation's survey, working until ``until`` (to the second
        before)."""
        expires = int(until.timestamp())
        signature = self._signer.sign(self.PURPOSE, conversation_id, expires)
        token = f"{conversation_id}.{expires}.{signature}"
        return SurveyLink(self.page_url + PATH + token, datetime.fromtimestamp(expires, UTC))

    def read(self, token: str) -> tuple[str, datetime]:
        """The conversation ``token`` names, and when the link stops working (whether it has
        is the caller's to say, on its clock). :class:`SurveyRefused` ``invalid`` for a token
        this server did not sign, or that is not one."""
        match = _TOKEN.match(token) if len(token) <= MAX_TOKEN else None
        if match is None:
            raise SurveyRefused("invalid")
        conversation_id, expires = match["id"], int(match["expires"])
        if not self._signer.signed(self.PURPOSE, conversation_id, expires, match["sig"]):
            raise SurveyRefused("invalid")
        return conversation_id, datetime.fromtimestamp(expires, UTC)
