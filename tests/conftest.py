"""Shared fixtures. Models and data are built by the tests themselves (small, seeded, real TF)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# the shared test helpers (helpers.py, model_factory.py, xdist_once.py) are importable from every test folder
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("K210TOOL_TEST", "1")
