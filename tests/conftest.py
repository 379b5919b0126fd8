from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from tests.support import make_config


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    """A whole server on 127.0.0.1, ephemeral ports, memory store, owned by this fixture."""
    async with open_server(
        make_config(), entropy=SeededEntropy(7), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        yield running
