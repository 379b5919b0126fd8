"""``omni import-config FILE`` and ``omni serve --config FILE`` as an operator runs them: real
processes against a fresh PostgreSQL database (``OMNI_DATABASE_URL``).

* import-config creates or replaces each resource of the file (audited) and says how many
  changed; importing the same file again changes nothing; a bad file exits 2 with one line.
* ``serve --config`` then serves what the store holds: the file bootstraps only an empty store,
  so the imported configuration — and later changes made through the API — win over the file,
  across restarts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/omni.toml"
#: The example's resources: 2 schedules, 3 groups, 2 services, 4 operators, 1 API token, 3 users and
#: the parameters.
EXAMPLE_RESOURCES = 18
ADMIN = {"Authorization": "Bearer admin-example-4Fy7Gh2Xc9Vb5Mn3"}

pytestmark = pytest.mark.postgresql


def _env(database_url: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMNI_DATABASE_URL": database_url}


async def _omni(database_url: str, *args: str) -> tuple[int, str, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "omni.cli", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=_env(database_url),
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@asynccontextmanager
async def _serving(database_url: str) -> AsyncIterator[str]:
    """``omni serve --config examples/omni.toml`` on ephemeral ports; yields its HTTP URL, and
    stops it with SIGTERM (it must exit 0), or kills it if anything went wrong."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "omni.cli",
            "serve",
            "--config",
            EXAMPLE,
            "--ws-port",
            "0",
            "--http-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=_env(database_url),
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while b"omni: serving" not in output or not output.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, output.decode()
                output += chunk
        found = re.search(r"HTTP on (http://127\.0\.0\.1:\d+)", output.decode())
        assert found, output.decode()
        yield found.group(1)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _services(api: httpx.AsyncClient) -> dict[int, str]:
    response = await api.get("/api/v1/services", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {s["id"]: s["name"] for s in response.json()}


def _variant(tmp_path: Path) -> Path:
    """The example with Sales renamed and one more group: 2 resources differ from it."""
    text = (ROOT / EXAMPLE).read_text(encoding="utf-8")
    text = text.replace('name = "Sales"\nschedule', 'name = "Sales (imported)"\nschedule', 1)
    text += '\n[[groups]]\nid = 4\nname = "Retention"\n'
    path = tmp_path / "variant.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_import_is_counted_idempotent_and_refuses_bad_files(
    postgres_dsn: str, tmp_path: Path
) -> None:
    code, out, err = await _omni(postgres_dsn, "import-config", EXAMPLE)
    assert (code, err) == (0, ""), err
    assert out == (
        f"omni: imported {EXAMPLE_RESOURCES} changed resource(s) of {EXAMPLE_RESOURCES} "
        f"from {EXAMPLE}\n"
    )

    code, out, err = await _omni(postgres_dsn, "import-config", EXAMPLE)
    assert (code, err) == (0, ""), err
    assert f"imported 0 changed resource(s) of {EXAMPLE_RESOURCES}" in out

    variant = _variant(tmp_path)
    code, out, err = await _omni(postgres_dsn, "import-config", str(variant))
    assert code == 0, err
    assert f"imported 2 changed resource(s) of {EXAMPLE_RESOURCES + 1}" in out

    bad_files = {
        "type.toml": ('[[groups]]\nid = "one"\nname = "x"\n', "Expected `int`, got `str`"),
        "reference.toml": (
            '[[groups]]\nid = 1\nname = "x"\n\n[[services]]\nid = 5\nname = "y"\n'
            "links = [{ group = 9 }]\n",
            "service 5: unknown group 9",
        ),
        "syntax.toml": ("[[groups]\nid = 1\n", "not valid TOML"),
        "missing.toml": (None, "cannot read"),
    }
    for name, (content, expected) in bad_files.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content, encoding="utf-8")
        code, out, err = await _omni(postgres_dsn, "import-config", str(path))
        assert code == 2, (name, out, err)
        assert out == ""
        assert err.endswith("\n") and err.count("\n") == 1, err
        assert err.startswith(f"omni: {path}: ") and expected in err, err
        assert "Traceback" not in err

    # Nothing of the bad files reached the store.
    code, out, _ = await _omni(postgres_dsn, "import-config", str(variant))
    assert code == 0 and f"imported 0 changed resource(s) of {EXAMPLE_RESOURCES + 1}" in out


async def test_serve_uses_the_imported_configuration_and_keeps_api_changes(
    postgres_dsn: str, tmp_path: Path
) -> None:
    variant = _variant(tmp_path)
    code, _, err = await _omni(postgres_dsn, "import-config", str(variant))
    assert code == 0, err

    async with _serving(postgres_dsn) as url, httpx.AsyncClient(base_url=url) as api:
        # The store's configuration, not the --config file's.
        assert await _services(api) == {
            25: "Customer support",
            30: "Sales (imported)",
            40: "Shop assistant",
        }
        groups = (await api.get("/api/v1/groups", headers=ADMIN)).json()
        assert [g["id"] for g in groups] == [1, 2, 3, 4]
        # Every imported resource was audited as the importer's.
        audit = (await api.get("/api/v1/audit", params={"limit": 500}, headers=ADMIN)).json()
        assert {e["actor"] for e in audit["items"]} == {"import-config"}
        assert len(audit["items"]) == EXAMPLE_RESOURCES + 1
        assert all("token" not in (e["after"] or {}) for e in audit["items"])

        # A change through the API ...
        sales = (await api.get("/api/v1/services/30", headers=ADMIN)).json()
        response = await api.put(
            "/api/v1/services/30", json={**sales, "name": "Sales (API)"}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        response = await api.delete("/api/v1/groups/4", headers=ADMIN)
        assert response.status_code == 204, response.text

    # ... survives a restart with the same --config file, which does not override the store.
    async with _serving(postgres_dsn) as url, httpx.AsyncClient(base_url=url) as api:
        assert await _services(api) == {
            25: "Customer support",
            30: "Sales (API)",
            40: "Shop assistant",
        }
        groups = (await api.get("/api/v1/groups", headers=ADMIN)).json()
        assert [g["id"] for g in groups] == [1, 2, 3]
        audit = (await api.get("/api/v1/audit", headers=ADMIN)).json()["items"]
        assert [(e["actor"], e["action"], e["kind"], e["key"]) for e in audit[:2]] == [
            ("token:admin", "delete", "groups", "4"),
            ("token:admin", "update", "services", "30"),
        ]


async def test_serve_bootstraps_an_empty_store_from_the_file_once(postgres_dsn: str) -> None:
    """Without an import, ``--config`` fills the empty store (audited as ``bootstrap``); the
    next start finds it filled and leaves it alone."""
    async with _serving(postgres_dsn) as url, httpx.AsyncClient(base_url=url) as api:
        assert await _services(api) == {
            25: "Customer support",
            30: "Sales",
            40: "Shop assistant",
        }
        response = await api.delete("/api/v1/operators/4", headers=ADMIN)
        assert response.status_code == 204, response.text
        audit = (await api.get("/api/v1/audit", params={"limit": 500}, headers=ADMIN)).json()
        assert {e["actor"] for e in audit["items"][1:]} == {"bootstrap"}
    async with _serving(postgres_dsn) as url, httpx.AsyncClient(base_url=url) as api:
        operators = (await api.get("/api/v1/operators", headers=ADMIN)).json()
        assert [o["id"] for o in operators] == [1, 2, 3]


async def test_an_import_that_the_store_cannot_hold_is_refused_or_served(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """A file that is consistent on its own but not with what the store already holds (here:
    an operator whose console token is Alice's) must not leave the store unservable: either
    import-config refuses it (exit 2, one line), or ``omni serve`` still starts afterwards."""
    code, _, err = await _omni(postgres_dsn, "import-config", EXAMPLE)
    assert code == 0, err
    clash = tmp_path / "clash.toml"
    clash.write_text(
        '[[groups]]\nid = 1\nname = "Support L1"\n\n'
        '[[operators]]\nid = 9\nname = "Zoe"\ngroups = [1]\n'
        'token = "alice-example-7Rk2Qw9ZpX4mLs8V"\n',
        encoding="utf-8",
    )
    code, out, err = await _omni(postgres_dsn, "import-config", str(clash))
    assert code in (0, 2), (code, out, err)
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err, err
    async with _serving(postgres_dsn) as url, httpx.AsyncClient(base_url=url) as api:
        assert await _services(api) == {
            25: "Customer support",
            30: "Sales",
            40: "Shop assistant",
        }
