"""Verification pairs: from an LFW ``pairs.txt``, or generated from identity labels.

Pairs index into one array of unique images, so an image used by several pairs runs once per model.
Generated pairs alternate genuine / impostor, so every contiguous fold of the 10-fold protocol holds both.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from k210tool.errors import InputError


@dataclass
class PairList:
    left: np.ndarray  # int index of the first image of each pair
    right: np.ndarray
    issame: np.ndarray  # bool
    source: str  # how the pairs were made, for the report

    def __len__(self) -> int:
        return len(self.issame)

    @property
    def genuine(self) -> int:
        return int(np.sum(self.issame))


@dataclass(frozen=True)
class PairOptions:
    """How pairs are generated from identity folders.

    Default: ``repeat`` genuine and ``repeat`` impostor pairs per identity (balanced). With ``persons`` and
    ``per_person``: that many identities with that many images each, every genuine pair among them and as
    many impostor pairs, drawn at random.
    """

    repeat: int = 5
    persons: int | None = None
    per_person: int | None = None
    seed: int = 0

    @property
    def mode(self) -> str:
        return "persons" if self.persons is not None or self.per_person is not None else "balanced"


def generate_pairs(identities: np.ndarray, opts: PairOptions) -> PairList:
    """Pairs over images labelled ``identities`` (int per image, -1 = unlabelled)."""
    ids = np.asarray(identities)
    groups = {int(i): np.flatnonzero(ids == i) for i in np.unique(ids) if i >= 0}
    if len(groups) < 2:
        raise InputError(f"verification pairs need at least 2 identities, found {len(groups)}",
                         "put each person's images in their own sub-folder of --data")
    if not any(len(g) >= 2 for g in groups.values()):
        raise InputError("verification pairs need an identity with at least 2 images",
                         "put several images of each person in their sub-folder")
    rng = np.random.default_rng([982451653, opts.seed])
    if opts.mode == "persons":
        genuine, impostor, desc = _persons_pairs(groups, opts, rng)
    else:
        genuine, impostor, desc = _balanced_pairs(groups, opts, rng)
    return _interleave(genuine, impostor, desc)


def _balanced_pairs(groups: dict[int, np.ndarray], opts: PairOptions,
                    rng: np.random.Generator) -> tuple[list[tuple[int, int]], list[tuple[int, int]], str]:
    if opts.repeat < 1:
        raise InputError("--repeat must be at least 1")
    genuine: list[tuple[int, int]] = []
    impostor: list[tuple[int, int]] = []
    keys = sorted(groups)
    for key in keys:
        members = groups[key]
        if len(members) >= 2:
            combos = list(itertools.combinations(members.tolist(), 2))
            picks = rng.choice(len(combos), min(opts.repeat, len(combos)), replace=False)
            genuine += [combos[i] for i in sorted(picks)]
        others = np.concatenate([groups[k] for k in keys if k != key])
        for _ in range(opts.repeat):
            impostor.append((int(rng.choice(members)), int(rng.choice(others))))
    impostor = [impostor[i] for i in sorted(rng.choice(len(impostor), len(genuine), replace=False))]
    return genuine, impostor, f"generated: up to {opts.repeat} genuine + as many impostor pairs per identity"


def _persons_pairs(groups: dict[int, np.ndarray], opts: PairOptions,
                   rng: np.random.Generator) -> tuple[list[tuple[int, int]], list[tuple[int, int]], str]:
    per_person = opts.per_person or 2
    if per_person < 2:
        raise InputError("--per-person must be at least 2 (genuine pairs need two images of a person)")
    eligible = sorted(k for k, g in groups.items() if len(g) >= per_person)
    persons = opts.persons or len(eligible)
    if persons < 2:
        raise InputError("--persons must be at least 2")
    if len(eligible) < persons:
        raise InputError(f"only {len(eligible)} identities have {per_person} images, --persons asks for {persons}",
                         "lower --persons or --per-person")
    chosen = sorted(rng.choice(eligible, persons, replace=False).tolist())
    picked = {k: sorted(rng.choice(groups[k], per_person, replace=False).tolist()) for k in chosen}
    genuine = [pair for k in chosen for pair in itertools.combinations(picked[k], 2)]
    cross = [(a, b) for i, ka in enumerate(chosen) for kb in chosen[i + 1:] for a in picked[ka] for b in picked[kb]]
    take = rng.choice(len(cross), min(len(genuine), len(cross)), replace=False)
    impostor = [cross[i] for i in sorted(take)]
    return genuine, impostor, f"generated: {persons} persons x {per_person} images, all genuine pairs"


def _interleave(genuine: list[tuple[int, int]], impostor: list[tuple[int, int]], desc: str) -> PairList:
    order: list[tuple[tuple[int, int], bool]] = []
    for g, i in itertools.zip_longest(genuine, impostor):
        if g is not None:
            order.append((g, True))
        if i is not None:
            order.append((i, False))
    left = np.array([p[0][0] for p in order], np.int64)
    right = np.array([p[0][1] for p in order], np.int64)
    return PairList(left, right, np.array([p[1] for p in order], bool), desc)


# ---------------------------------------------------------------------------------------------------
# LFW pairs.txt
# ---------------------------------------------------------------------------------------------------
@dataclass
class LfwPair:
    first: tuple[str, int]  # (person, image number)
    second: tuple[str, int]
    same: bool
    line: int


def parse_lfw_pairs(path: Path | str) -> list[LfwPair]:
    """Read LFW's ``pairs.txt`` (or ``pairsDevTest.txt``): ``name n1 n2`` = same, ``name1 n1 name2 n2`` = different.

    The optional first line holds the counts (``10 300`` or ``500``) and is skipped.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read pairs file {p}: {exc.strerror or exc}") from None
    pairs: list[LfwPair] = []
    for number, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields or (number == 1 and all(f.isdigit() for f in fields)):
            continue
        try:
            if len(fields) == 3:
                pairs.append(LfwPair((fields[0], int(fields[1])), (fields[0], int(fields[2])), True, number))
            elif len(fields) == 4:
                pairs.append(LfwPair((fields[0], int(fields[1])), (fields[2], int(fields[3])), False, number))
            else:
                raise ValueError
        except ValueError:
            raise InputError(f"{p} line {number} is not an LFW pair: {raw.strip()[:80]!r}",
                             "expected 'name n1 n2' (same person) or 'name1 n1 name2 n2' (different)") from None
    if not pairs:
        raise InputError(f"{p} holds no pairs")
    return pairs


def lfw_image_path(root: Path, person: str, number: int) -> Path | None:
    """``root/person/person_0001.jpg`` (LFW's naming), or the same stem with another image suffix."""
    from k210tool.preprocess import IMAGE_SUFFIXES

    if "/" in person or "\\" in person or person in (".", ".."):
        return None  # a pairs file must not point outside the image folder
    stem = f"{person}_{number:04d}"
    for suffix in IMAGE_SUFFIXES:
        candidate = root / person / (stem + suffix)
        if candidate.is_file():
            return candidate
    return None
