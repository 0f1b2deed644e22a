"""Shared fixtures. Models and data are built by the tests themselves (small, seeded, real TF)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the shared test helpers (helpers.py, model_factory.py, xdist_once.py) are importable from every test folder
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("K210TOOL_TEST", "1")

# fuzz tests: CI replays the same seeded examples every run (green every time, a failure reproduces);
# a developer's run draws new ones and finds what CI has not seen yet
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """xdist groups for `make test`'s ``--dist loadgroup``: a module that builds something module-scoped (a
    model trained or converted once for all its tests) runs on one worker, so it is built once rather than
    once per worker. Session artefacts shared between workers use tests/xdist_once.py instead."""
    for item in items:
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if any(d.scope == "module" for chain in defs.values() for d in chain):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
