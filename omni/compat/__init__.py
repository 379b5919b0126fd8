"""Adapters to the private parts of Omni's dependencies, one small module per dependency.

Rules: code elsewhere uses its dependencies' public APIs only. Where speed or determinism truly
needs an internal, it lives here, behind a function or class that checks at start-up that the
installed version is one whose internals it was written and tested against, and fails loudly
(never a silent slow path) when an upgrade changes what it relies on. Each adapter has a
conformance test (tests/test_compat.py) and, in docs/decisions.md, the upstream proposal that
would make it public.
"""


class IncompatibleDependency(RuntimeError):
    """An installed dependency is not one whose internals Omni's adapter was written for."""
