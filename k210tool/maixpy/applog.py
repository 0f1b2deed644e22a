"""Host side of what the face_recognition / enroll / benchmark scripts leave behind: their log lines and
the enrolled-faces file.

Log lines (one per event, among any other board output)::

    k210tool ready template=face_recognition people=2 threshold=0.500
    k210tool face frame=7 score=0.8123 box=40,32,96,96 name="Alice"      (name=null: not recognised)
    k210tool enrolled shot=1/3 person=1/2 name="Alice"
    k210tool bench runs=100 mean_ms=41.2 ...
    k210tool done people=2 frames=31 store="/flash/k210tool_faces.json"

``key=value`` fields have no spaces; the last field may be a JSON value (names are JSON strings, so any
name survives, newlines included).

Enrolled faces (``--db``, JSON, written by enroll and read by face_recognition)::

    {"format": "k210tool-faces", "version": 1, "dim": 128, "model_size": 1401232,
     "people": [{"name": "Alice", "embeddings": [[...128 floats...], ...]}, ...]}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k210tool.errors import InputError

FACE_DB_FORMAT = "k210tool-faces"
_LINE = re.compile(r"k210tool (?P<kind>[a-z_]+)(?P<rest>(?: .*)?)$")
_JSON_START = ('"', "null", "[", "{", "true", "false")


@dataclass(frozen=True)
class AppEvent:
    kind: str
    fields: dict[str, str]
    text_key: str | None = None
    text: Any = None

    @property
    def name(self) -> Any:
        return self.text if self.text_key == "name" else None


def _parse_rest(rest: str) -> tuple[dict[str, str], str | None, Any]:
    fields: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        eq = rest.find("=", pos)
        if eq < 0:
            raise ValueError(f"no '=' in {rest[pos:]!r}")
        key = rest[pos:eq]
        value_start = eq + 1
        if rest.startswith(_JSON_START, value_start):
            return fields, key, json.loads(rest[value_start:])
        end = rest.find(" ", value_start)
        end = len(rest) if end < 0 else end
        fields[key] = rest[value_start:end]
        pos = end + 1
    return fields, None, None


def parse_app_log(text: str) -> list[AppEvent]:
    """Every ``k210tool ...`` line of ``text`` (other lines are skipped; malformed ones raise InputError)."""
    events = []
    for number, raw in enumerate(text.splitlines(), 1):
        m = _LINE.search(raw.rstrip("\r"))
        if not m:
            continue
        try:
            fields, key, value = _parse_rest(m.group("rest"))
        except ValueError as exc:
            raise InputError(f"board log line {number} is malformed ({exc}): {raw[:80]!r}") from None
        events.append(AppEvent(m.group("kind"), fields, key, value))
    return events


@dataclass
class FaceStore:
    dim: int
    model_size: int
    names: list[str] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)  # per person, (shots, dim) float32


def read_face_db(text: str) -> FaceStore:
    """Parse the enrolled-faces JSON the enroll script writes."""
    try:
        db = json.loads(text)
        if db.get("format") != FACE_DB_FORMAT:
            raise ValueError(f"format is {db.get('format')!r}")
        store = FaceStore(int(db["dim"]), int(db["model_size"]))
        for person in db["people"]:
            emb = np.asarray(person["embeddings"], np.float32)
            if emb.ndim != 2 or emb.shape[1] != store.dim:
                raise ValueError(f"{person['name']!r} has embeddings of shape {emb.shape}")
            store.names.append(str(person["name"]))
            store.embeddings.append(emb)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"not a k210tool face store: {exc}", "enroll again with the enroll script") from None
    return store


def write_face_db(store: FaceStore) -> str:
    """The JSON text of ``store`` (e.g. to enrol on the host and copy the file to the board)."""
    people = [{"name": n, "embeddings": np.asarray(e, np.float32).tolist()}
              for n, e in zip(store.names, store.embeddings, strict=True)]
    return json.dumps({"format": FACE_DB_FORMAT, "version": 1, "dim": store.dim,
                       "model_size": store.model_size, "people": people})
