"""What a channel sends, sans-IO (issue 17): a text longer than the platform takes in one
message is cut into parts — each within the limit (in UTF-16 code units), together exactly the
text, cut after whitespace when that leaves no part less than half full — and only for the
platforms that have a limit. A refused message is explained in the service's language."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from omni.domain.channels import TEXT_LIMITS, channel_parts, refusal_text, split_text
from omni.domain.model import GroupLink, Service


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


texts = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
        st.sampled_from([" ", "\n", "a", "é", "😀"]),
    ),
    max_size=400,
)


@given(texts, st.integers(min_value=2, max_value=50))
def test_the_parts_are_the_text_each_within_the_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert "".join(parts) == text
    assert all(part and utf16(part) <= limit for part in parts)
    if utf16(text) <= limit:
        assert parts == ([text] if text else [])
    for part, following in pairwise(parts):
        # Cut after whitespace when the part would keep more than half of what fitted; a part
        # cut elsewhere is as full as the limit allows (up to one character beyond the BMP).
        if not part[-1].isspace():
            assert utf16(part) >= limit - 1 or utf16(part + following[0]) > limit
            assert not any(c.isspace() for c in part[len(part) // 2 :])


def test_words_are_not_cut() -> None:
    text = " ".join(f"word{n:04d}" for n in range(1000))  # 8999 characters
    parts = split_text(text, 4096)
    assert "".join(parts) == text and len(parts) == 3
    assert all(part.endswith(" ") for part in parts[:-1])
    assert all(len(part) <= 4096 for part in parts)


def test_a_text_without_whitespace_is_cut_at_the_limit() -> None:
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]
    # A space early in the part is not worth a tiny part.
    assert split_text("a bcdefghij", 8) == ["a bcdefg", "hij"]
    # An emoji beyond the BMP counts two and is never cut.
    assert split_text("ab😀c", 3) == ["ab", "😀c"]


def test_only_platforms_with_a_limit_cut() -> None:
    long = "y" * 5000
    assert TEXT_LIMITS == {"whatsapp": 4096, "telegram": 4096}
    assert [len(p) for p in channel_parts("whatsapp", long)] == [4096, 904]
    assert [len(p) for p in channel_parts("telegram", long)] == [4096, 904]
    assert channel_parts("generic", long) == [long]


def test_a_refusal_is_explained_in_the_services_language() -> None:
    english = Service(id=1, name="S", links=(GroupLink(group=1),), language="auto")
    portuguese = Service(id=1, name="S", links=(GroupLink(group=1),), language="pt-BR")
    assert "at most 20 of them" in refusal_text("message_limit", english, 20)
    assert "no máximo 3 até" in refusal_text("message_limit", portuguese, 3)
    assert refusal_text("invalid_reply", portuguese, 3).startswith("Por favor")
    assert refusal_text("invalid_state", english, 3) == "Sorry, we could not take that message."
