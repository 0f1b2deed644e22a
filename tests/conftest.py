"""Shared fixtures. Models and data are built by the tests themselves (small, seeded, real TF)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("K210TOOL_TEST", "1")
