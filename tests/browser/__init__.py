"""Browser tests: pages proven in a real browser (Debian's Chromium driven by Playwright, axe for
accessibility, screenshots kept as artifacts). Mark each module ``pytestmark =
pytest.mark.browser``; the fixtures are in this folder's ``conftest.py``, the harness they build
on in ``harness.py`` and ``site.py``."""
