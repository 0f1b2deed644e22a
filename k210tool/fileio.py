"""Output files: atomic, never over an input, with the permissions the user's umask asks for.

Every output is written to an unnamed file in the target's folder (Linux ``O_TMPFILE``), synced, then given
its name by a rename: a crash, Ctrl-C or even SIGKILL never leaves a half-written kmodel, kfpkg or report -
nor a temporary file - behind. Where ``O_TMPFILE`` is missing a named temporary file takes its place.
Files that belong together (a kmodel and its summary) are all written and synced before the first rename,
so a full disk replaces nothing; the summary records the kmodel's SHA-256, which readers check, so a kill
between the two renames is detected rather than trusted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from k210tool.errors import InputError


def check_output_path(path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """Fail early (before slow work) when ``path`` cannot be written or is one of ``inputs``."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", "create it or choose another -o path")
    if p.is_dir():
        raise InputError(f"output path {p} is a directory", "give a file name")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output directory {parent} is not writable")
    for source in inputs:
        if source is not None and same_file(p, source):
            raise InputError(f"writing {p} would overwrite the input {source}", "choose another output path")
    return p


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when both paths name one file (also through links); False when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).absolute() == Path(b).absolute()


def output_mode() -> int:
    """Permission bits for a new file: 0666 less the process umask (what ``open()`` would give)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(mask)
    return 0o666 & ~mask


def _disk_error(target: Path, exc: OSError) -> InputError:
    what = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return InputError(f"cannot write {target}: {what}", "free some space or choose another output folder")


class _Pending:
    """An output being written: an unnamed file (or a hidden named one) in the target's folder."""

    def __init__(self, target: Path) -> None:
        self.target = target
        folder = str(target.parent or ".")
        self.tmp: str | None = None
        try:
            self.fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)  # mode less the umask
        except (AttributeError, OSError):  # no O_TMPFILE here (old kernel, some file systems)
            self.fd, self.tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
            os.fchmod(self.fd, output_mode())

    def commit(self) -> None:
        os.fsync(self.fd)
        while self.tmp is None:  # name the unnamed file (link never replaces a name), then move it into place
            name = tempfile.mktemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent or ".")
            fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:  # linkat(AT_SYMLINK_FOLLOW) through /proc: plain link() would not follow the fd's link
                os.link(str(self.fd), name, src_dir_fd=fds, follow_symlinks=True)
                self.tmp = name
            except FileExistsError:
                continue
            finally:
                os.close(fds)
        os.replace(self.tmp, self.target)
        self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(str(folder or "."), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open an unnamed file next to ``path``; on success it replaces ``path`` atomically."""
    target = check_output_path(path)
    pending = _Pending(target)
    try:
        with os.fdopen(pending.fd, mode, closefd=False) as fh:
            yield fh
            fh.flush()
        pending.commit()
    except OSError as exc:
        pending.discard()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise _disk_error(target, exc) from None
        raise
    except BaseException:
        pending.discard()
        raise
    finally:
        os.close(pending.fd)
    _sync_folder(target.parent)


def write_together(files: list[tuple[str | os.PathLike[str], bytes]]) -> list[Path]:
    """Write every file before renaming any: a full disk or an error replaces none of them."""
    targets = [check_output_path(p) for p, _ in files]
    pending: list[_Pending] = []
    try:
        for target, (_, data) in zip(targets, files, strict=True):
            pending.append(_Pending(target))
            _write_all(pending[-1].fd, data)
            os.fsync(pending[-1].fd)
        for p in pending:
            p.commit()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise _disk_error(pending[-1].target if pending else targets[0], exc) from None
        raise
    finally:
        for p in pending:
            p.discard()
            os.close(p.fd)
    for folder in {t.parent for t in targets}:
        _sync_folder(folder)
    return targets


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return write_text(path, json_text(data))


def _json_default(obj: Any) -> Any:
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy scalars/arrays and paths -> plain JSON types."""
    return json.loads(json.dumps(obj, default=_json_default))


# ---------------------------------------------------------------------------------------------------
# scratch folders
# ---------------------------------------------------------------------------------------------------
SCRATCH_PREFIX = "k210tool-"


@contextlib.contextmanager
def scratch_dir(what: str) -> Iterator[Path]:
    """A private temporary folder (mode 0700), removed on exit; folders left by killed runs are swept.

    The folder's name carries this process's id, so the next run can tell a folder whose owner died
    (SIGKILL, power loss) from one in use and remove it.
    """
    root = Path(tempfile.gettempdir())
    sweep_scratch(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{what}-{os.getpid()}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_scratch(root: Path) -> list[Path]:
    """Remove this user's scratch folders whose process no longer runs; returns what was removed."""
    removed = []
    uid = os.getuid()
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            pid = _scratch_owner(entry.name)
            if pid is None or pid == os.getpid() or _alive(pid):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == uid:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(Path(entry.path))
    return removed


def _scratch_owner(name: str) -> int | None:
    if not name.startswith(SCRATCH_PREFIX):
        return None
    parts = name[len(SCRATCH_PREFIX):].split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
