"""The TOML configuration: the example loads; every mistake is named precisely."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from omni.config import ConfigError, load_config, parse_config
from omni.domain.values import secret_weakness

BASE: dict[str, Any] = {
    "schedules": [
        {"id": "s", "timezone": "America/Sao_Paulo", "weekly": {"mon": [["08:00", "12:00"]]}}
    ],
    "groups": [{"id": 1, "name": "G"}],
    "services": [{"id": 25, "name": "S", "schedule": "s", "links": [{"group": 1}]}],
    "operators": [{"id": 1, "name": "O", "groups": [1], "token": "a-long-token-Wr5Ty8Ui2Op"}],
}


def test_the_example_configuration_loads() -> None:
    config = load_config("examples/omni.toml")
    directory = config.directory
    assert sorted(directory.services) == [25, 30, 40]
    assert directory.bots["shop"].start == "hello" and len(directory.bots["shop"].nodes) == 7
    assert len(directory.groups) == 3
    business = directory.schedules["business-hours"]
    # Monday 2026-11-23: 12:30 in São Paulo (UTC-3) is the lunch break.
    assert business.is_open(datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    assert not business.is_open(datetime(2026, 11, 23, 15, 30, tzinfo=UTC))
    assert directory.operator_by_token("alice-example-7Rk2Qw9ZpX4mLs8V") is not None
    assert directory.operator_by_token("wrong") is None
    # Tokens are kept hashed only.
    assert all("example-" not in o.token_hash for o in directory.operators.values())
    assert config.server.max_frame_bytes == 65536


CAPTCHA = {"verify_url": "https://captcha.test/siteverify", "secret": "captcha-secret"}
CAPTCHA_FOR_PAGES = {
    **CAPTCHA,
    "provider": "turnstile",
    "site_key": "0x4AAAAAAA-site_key.1",
    "script_url": "https://challenges.cloudflare.com/turnstile/v0/api.js",
}


def _broken(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    target: Any = raw
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    target[int(last) if last.isdigit() else last] = value
    return raw


def test_captcha_settings_old_and_new() -> None:
    """A ``[server.captcha]`` with only the verification endpoint still loads (its pages cannot
    show a CAPTCHA); with the provider, site key and script URL they can."""
    raw = copy.deepcopy(BASE)
    raw["server"] = {"captcha": CAPTCHA}
    old = parse_config(raw).server.captcha
    assert old is not None and not old.for_pages
    raw["server"] = {
        "captcha": CAPTCHA_FOR_PAGES,
        "public_url": "https://chat.example",
        "public_ws_url": "wss://chat.example/omni",
    }
    server = parse_config(raw).server
    assert server.captcha is not None and server.captcha.for_pages
    assert server.captcha.site_key == "0x4AAAAAAA-site_key.1"
    assert (server.public_url, server.public_ws_url) == (
        "https://chat.example",
        "wss://chat.example/omni",
    )
    assert "secret" not in repr(server.captcha)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("services.0.id", "x", "Expected `int`, got `str` - at `$.services[0].id`"),
        ("services.0.links", [], "at `$.services[0].links`"),
        ("services.0.links.0.group", 9, "service 25: unknown group 9"),
        ("services.0.schedule", "nope", "unknown schedule 'nope'"),
        ("services.0.colour", "red", "unknown field `colour`"),
        (
            "schedules.0.timezone",
            "Mars/Olympus",
            "unknown time zone 'Mars/Olympus': expected an IANA name such as 'America/Sao_Paulo' "
            "or 'UTC' - at `$.schedules[0]`",
        ),
        (
            "schedules.0.weekly",
            {"mon": [["12:00", "08:00"]]},
            "invalid interval 12:00-08:00: the start must be before the end",
        ),
        (
            "schedules.0.weekly",
            {"mon": [["12:00", "08:00"]]},
            "at `$.schedules[0].weekly.mon[0]`",
        ),
        (
            "schedules.0.weekly",
            {"monday": [["08:00", "12:00"]]},
            "unknown field `monday` - at `$.schedules[0].weekly`",
        ),
        (
            "services.0.timers",
            {"visitor_idle_warning": 60, "visitor_idle_close": 60},
            "visitor_idle_close must be longer than visitor_idle_warning (both count from the "
            "operator's last message) - at `$.services[0].timers`",
        ),
        ("services.0.timers", {"operator_reply": 0}, "at `$.services[0].timers.operator_reply`"),
        ("operators.0.capacity", 0, "at `$.operators[0].capacity`"),
        ("operators.0.token", "short", "at `$.operators[0].token`"),
        ("operators.0.groups", [7], "operator 1: unknown group 7"),
        ("groups", [{"id": 1, "name": "A"}, {"id": 1, "name": "B"}], "$.groups: duplicate id(s) 1"),
        ("server", {"ws_port": 70000}, "at `$.server.ws_port`"),
        ("server", {"max_frame_bytes": 10}, "at `$.server.max_frame_bytes`"),
        ("server", {"smtp": {"host": "mail"}}, "missing required field `sender`"),
        (
            "server",
            {"smtp": {"host": "mail", "sender": "not-an-address"}},
            "at `$.server.smtp.sender`",
        ),
        (
            "server",
            {"smtp": {"host": "mail", "sender": "chat@x.test", "username": "u"}},
            "a username needs starttls = true",
        ),
        (
            "server",
            {"captcha": {"verify_url": "ftp://example.com/verify", "secret": "s"}},
            "at `$.server.captcha.verify_url`",
        ),
        (
            "server",
            {"captcha": {**CAPTCHA, "provider": "turnstile", "site_key": "0x4AAA"}},
            "provider, site_key and script_url go together: the pages need all three to show a "
            "CAPTCHA - at `$.server.captcha`",
        ),
        (
            "server",
            {"captcha": {**CAPTCHA_FOR_PAGES, "script_url": "http://cdn.test/api.js"}},
            "at `$.server.captcha.script_url`",
        ),
        (
            "server",
            {"captcha": {**CAPTCHA_FOR_PAGES, "script_url": "https://x.test/a.js; script-src *"}},
            "at `$.server.captcha.script_url`",
        ),
        (
            "server",
            {"captcha": {**CAPTCHA_FOR_PAGES, "site_key": "a key"}},
            "at `$.server.captcha.site_key`",
        ),
        (
            "server",
            {"captcha": {**CAPTCHA_FOR_PAGES, "provider": "friendly"}},
            "at `$.server.captcha.provider`",
        ),
        ("server", {"public_url": "https://chat.example/omni"}, "at `$.server.public_url`"),
        ("server", {"public_url": "chat.example"}, "at `$.server.public_url`"),
        ("server", {"public_ws_url": "https://chat.example"}, "at `$.server.public_ws_url`"),
        ("server", {"public_ws_url": "wss://chat.example/"}, "at `$.server.public_ws_url`"),
        ("services.0.language", "fr", "at `$.services[0].language`"),
        ("services.0.public", "yes", "at `$.services[0].public`"),
    ],
)
def test_config_errors_name_the_field(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_broken(path, value))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ({"role": "operator"}, "api token t: an operator token needs operator_id"),
        ({"role": "operator", "operator_id": 9}, "api token t: unknown operator 9"),
        ({"role": "admin", "operator_id": 1}, "only an operator token is tied to an operator"),
        ({"role": "operator", "operator_id": 0}, "at `$.api_tokens[0].operator_id`"),
    ],
)
def test_api_token_errors(token: dict[str, Any], expected: str) -> None:
    raw = copy.deepcopy(BASE)
    raw["api_tokens"] = [{"id": "t", "name": "T", "token": "t-secret-token-Gh3Jk7Lz1X", **token}]
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert expected in str(info.value)
    raw["api_tokens"][0].update(role="operator", operator_id=1)
    assert parse_config(raw).directory.api_tokens["t"].operator_id == 1


@pytest.mark.parametrize(
    ("secret", "weakness"),
    [
        # 28 lower-case letters: 28 x log2(26) = 131.6 bits; 27 are 126.9.
        ("abcdefghijklmnopqrstuvwxyzab", None),
        ("abcdefghijklmnopqrstuvwxyza", "about 127 bits of entropy, at least 128 are needed"),
        # Lower case, upper case, digits and others: 95 characters, 6.57 bits each.
        ("a-B3cD4eF5gH6iJ7kL8m", None),
        ("a-B3cD4eF5gH6iJ7kL8", "about 125 bits of entropy, at least 128 are needed"),
        # A character outside ASCII counts as an "other" one.
        ("ébcdefghijklmnopqrstuvw", None),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "1 distinct character,"),
        ("0123456780123456780123456780123456780123456789", None),
        ("012345678012345678012345678012345678012345678", "9 distinct characters, at least 10"),
        ("tok-alice", "9 distinct characters"),
        ("alice-example-token", "about 112 bits"),
    ],
)
def test_secret_strength_is_estimated_from_length_and_character_classes(
    secret: str, weakness: str | None
) -> None:
    found = secret_weakness(secret)
    if weakness is None:
        assert found is None
    else:
        assert found is not None and found.startswith(weakness), found


@pytest.mark.parametrize(
    ("kind", "entry", "where"),
    [
        ("operators", {"id": 1, "name": "O", "groups": [1]}, "$.operators[0]"),
        ("api_tokens", {"id": "t", "name": "T", "role": "admin"}, "$.api_tokens[0]"),
    ],
)
def test_a_weak_token_in_the_file_is_refused_naming_it(
    kind: str, entry: dict[str, Any], where: str
) -> None:
    raw = copy.deepcopy(BASE)
    raw[kind] = [{**entry, "token": "alice-example-token"}]
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value) == (
        f"token is too weak: about 112 bits of entropy, at least 128 are needed - at `{where}`"
    )
    raw[kind][0]["token"] = "alice-example-7Rk2Qw9ZpX4mLs8V"
    assert parse_config(raw)


def test_a_weak_ops_token_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"ops_token is too weak: .* - at `\$.server`"):
        parse_config({"server": {"ops_token": "metrics-metrics-metrics"}})
    assert parse_config({"server": {"ops_token": "metrics-Qw7Zx2Lp9Vk4Rt8M"}})


def test_bad_toml_names_the_file(tmp_path: Any) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("[[services]\n")
    with pytest.raises(ConfigError, match=r"x\.toml: not valid TOML"):
        load_config(bad)
