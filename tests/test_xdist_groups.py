"""`make test` runs ``--dist loadgroup``: a module with a module-scoped fixture must run on one worker, or each worker
builds the module's model again. pytest 9.2 renamed the attribute pytest-xdist 3.8 writes the group into, and the
groups silently vanished; this test fails if that happens again (constraints.txt pins pytest below 9.2)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def built_once() -> list[str]:
    return []


@pytest.mark.parametrize("n", [1, 2])
def test_a_module_with_a_module_scoped_fixture_is_one_xdist_group(built_once: list[str], n: int,
                                                                    request: pytest.FixtureRequest) -> None:
    marks = [m.args[0] for m in request.node.iter_markers("xdist_group")]
    assert marks == [__name__]  # conftest.py marks it
    if getattr(request.config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        assert request.node.nodeid.endswith(f"@{__name__}"), request.node.nodeid
