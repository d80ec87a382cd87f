"""Publishing a bundle directory: staged beside ``--out``, locked, then swapped into place atomically.

Writes never lose data (docs/bundle.md, "Writing a bundle"):

- ``--force`` replaces only a directory that is a bert-export bundle (a ``manifest.json`` of ours)
  or is empty; anything else is refused before any work starts, and again at publish time.
- The export is built in a staging directory beside ``--out``
  (``.<name>.bert-export-staging.<pid>.<token>/bundle``) whose ``owner.json`` names the process
  that made it, so that a later export can tell a dead run's leftovers from anything else.
- Exports to one ``--out`` are serialised by ``.<name>.bert-export.lock`` beside it (``flock``,
  non-blocking: the second export fails at once, naming the first).
- On Linux the new bundle and the old one are exchanged in one ``renameat2(RENAME_EXCHANGE)``, so
  ``--out`` is at every instant either the complete old bundle or the complete new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bert_export.models import BertExportError

MANIFEST = "manifest.json"  # the reader's constant too (bundle.py); repeated so publishing never imports the reader
STAGING_TAG = "bert-export-staging"
OWNER = "owner.json"  # inside the staging directory, beside (never inside) the bundle being built
LOCK_TAG = "bert-export.lock"
MAX_MANIFEST_BYTES = 64 << 20
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
# Errors of the place, not of the export: reported as one line (the rest are bugs, with a traceback).
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO)


# --------------------------------------------------------------------------- what --force may replace


def is_our_bundle(directory: Path) -> bool:
    """A directory holding a bert-export manifest: a JSON object with an integer ``schema_version``
    and a ``files`` table. Nothing else is ours to delete."""
    manifest = directory / MANIFEST
    try:
        st = manifest.lstat()
        if not manifest.is_file() or manifest.is_symlink() or st.st_size > MAX_MANIFEST_BYTES:
            return False
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and type(data.get("schema_version")) is int
        and data["schema_version"] >= 1
        and isinstance(data.get("files"), dict)
    )


def check_target(out: str | Path, force: bool) -> Path:
    """Refuse an ``--out`` that exists without ``--force``, or that ``--force`` must not replace.

    Called by ``export()`` before any work starts, and again under the lock just before the
    swap (the directory may have changed meanwhile). Returns the absolute path (links in the
    parent are kept as the user wrote them; ``--out`` itself must not be a link).
    """
    out = Path(os.path.abspath(out))
    if out.is_symlink():
        raise BertExportError(f"--out {out} is a symbolic link; pass the directory it points to, or another --out")
    if out.exists():
        if not force:
            raise BertExportError(f"{out} already exists; pass --force to replace it, or choose another --out")
        if not out.is_dir():
            raise BertExportError(
                f"--out {out} exists and is not a directory; --force replaces only a bert-export bundle: choose another --out"
            )
        if any(out.iterdir()) and not is_our_bundle(out):
            raise BertExportError(
                f"--out {out} is not a bert-export bundle (no manifest.json of ours) and not empty; "
                f"--force replaces only bundles: move your files or choose another --out"
            )
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise BertExportError(f"cannot write in {ancestor} (read-only or not a directory); choose another --out")
    return out


# --------------------------------------------------------------------------- the lock


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.{LOCK_TAG}")


class TargetLock:
    """An exclusive, non-blocking ``flock`` on a file beside ``--out``.

    The file holds the owner (pid, start time, command) so that the loser can name it. It is
    removed on release while still locked; an acquirer checks that the file it locked is still
    the one at the path (inode), so removing it never lets two exports hold "the" lock.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = lock_path(out)
        self.fd: int | None = None

    def acquire(self) -> TargetLock:
        for _ in range(20):
            fd = _open_lock(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise BertExportError(
                    f"another export ({holder}) is writing {self.out}; wait for it to finish, or choose another --out"
                ) from None
            except OSError as exc:
                os.close(fd)
                raise BertExportError(f"cannot lock {self.path} ({exc.strerror}); choose another --out") from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(_me()).encode(), 0)
                self.fd = fd
                return self
            os.close(fd)  # released and removed by its owner between our open and flock: take the new file
        raise BertExportError(f"could not take the lock {self.path} (it keeps being replaced); try again")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self.fd, self.path):
                self.path.unlink()
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> TargetLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BertExportError(f"cannot create the lock file {path} ({exc.strerror}); choose a writable --out") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        when = time.strftime("%H:%M:%S", time.localtime(info["time"]))
        return f"pid {info['pid']}, started {when}: {info.get('command', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def probe_lock(out: Path) -> None:
    """Fail now, before any work, when another export holds ``out``'s lock (taken for real later)."""
    if out.parent.is_dir():
        with TargetLock(out):
            pass


# --------------------------------------------------------------------------- staging directories


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _me() -> dict[str, Any]:
    import sys

    return {
        "pid": os.getpid(),
        "start": _start_time(os.getpid()),
        "time": time.time(),
        "command": " ".join(["bert-export", *sys.argv[1:]])[:300],
    }


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return start is None or now is None or now == start


def _staging_pattern(out: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(out.name)}\.{STAGING_TAG}\.(\d+)\.[0-9a-f]{{16}}$")


def stale_staging(out: Path) -> list[Path]:
    """Staging directories of ``out`` left by runs that died (SIGKILL, power loss).

    Ours only: the name pattern, a real directory (not a link), an ``owner.json`` naming the same
    pid as the name, and that process gone (or its pid reused by a process started later).
    """
    pattern, found = _staging_pattern(out), []
    if not out.parent.is_dir():
        return found
    for entry in out.parent.iterdir():
        m = pattern.match(entry.name)
        if not m or entry.is_symlink() or not entry.is_dir():
            continue
        owner = entry / OWNER
        try:
            if owner.is_symlink() or owner.stat().st_size > 4096:
                continue
            info = json.loads(owner.read_text(encoding="utf-8"))
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid == int(m.group(1)) and pid != os.getpid() and not _alive(pid, info.get("start")):
            found.append(entry)
    return found


def remove_staging(staging: Path) -> None:
    """Delete a staging directory, its ``owner.json`` last, so an interrupted removal stays recognisable."""
    for child in staging.iterdir() if staging.is_dir() else ():
        if child.name == OWNER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()
    with contextlib.suppress(OSError):
        (staging / OWNER).unlink()
    with contextlib.suppress(OSError):
        staging.rmdir()


def remove_stale(out: Path) -> list[Path]:
    """Remove dead runs' staging directories of ``out`` (call under ``out``'s lock); returns them."""
    stale = stale_staging(out)
    for path in stale:
        remove_staging(path)
    return stale


def _make_staging(out: Path) -> Path:
    staging = out.with_name(f".{out.name}.{STAGING_TAG}.{os.getpid()}.{secrets.token_hex(8)}")
    try:
        staging.mkdir(mode=0o700)
        (staging / OWNER).write_text(json.dumps(_me()) + "\n", encoding="utf-8")
        (staging / "bundle").mkdir(mode=0o700)
    except OSError as exc:
        remove_staging(staging)
        raise BertExportError(f"cannot write in {out.parent} ({exc.strerror}); choose another --out") from None
    return staging


# --------------------------------------------------------------------------- the swap


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """``renameat2(2)`` through libc (glibc >= 2.28); raises OSError(ENOSYS) where it is missing."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(src))


def exchange(new: Path, out: Path) -> None:
    """Put the directory ``new`` at ``out``; the old ``out`` (if any) ends at ``new``'s path.

    Linux: one ``renameat2`` (``RENAME_EXCHANGE`` when ``out`` exists, ``RENAME_NOREPLACE`` when
    it does not), atomic for every reader. Where the call or the flag is missing (other systems,
    kernels before 3.15, some filesystems: ENOSYS / EINVAL) the fallback is ``_merge``: no POSIX
    call replaces a non-empty directory, and moving the old one away first would leave ``out``
    missing for a moment (and for good if the process died there), which is what this module
    exists to prevent.
    """
    try:
        _renameat2(new, out, RENAME_EXCHANGE if out.exists() else RENAME_NOREPLACE)
        return
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise BertExportError(
                f"{out} appeared while exporting; pass --force to replace it, or choose another --out"
            ) from None
        if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
            raise
    if not out.exists():
        os.rename(new, out)  # POSIX rename onto nothing (or an empty directory) is atomic
        new.mkdir(mode=0o700)  # the caller removes "the old tree" at new's path: leave an empty one
        return
    _merge(new, out)


def _merge(new: Path, out: Path) -> None:
    """Fallback swap: move the new files over the old ones one by one (each ``os.replace`` is
    atomic), ``manifest.json`` last, then move the old bundle's other files to ``new``.

    ``out`` never disappears; until the manifest is replaced it is the old manifest over some new
    files, which the checksums reject (a reader sees "modified after export", never wrong
    numbers), and ``--force`` replaces it again since its manifest is still ours.
    """
    new_files = sorted(p.relative_to(new) for p in new.rglob("*") if p.is_file() and not p.is_symlink())
    keep = set(new_files)
    for rel in sorted(new_files, key=lambda r: r.as_posix() == MANIFEST):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(new / rel, out / rel)
    old = sorted(
        (p for p in out.rglob("*") if (p.is_file() or p.is_symlink()) and p.relative_to(out) not in keep), reverse=True
    )
    for path in old:
        dest = new / path.relative_to(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    for d in sorted((p for p in out.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # only directories the old bundle emptied


# --------------------------------------------------------------------------- the context manager


@contextlib.contextmanager
def staged_directory(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty directory to build the bundle in; on success swap it in as ``out``.

    Holds ``out``'s lock throughout, first removing dead runs' staging directories. On any
    exception (a failed parity gate, Ctrl-C, SIGTERM) the staging directory is removed and
    ``out`` is untouched.
    """
    out = check_target(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BertExportError(f"cannot create {out.parent} ({exc.strerror}); choose another --out") from None
    with TargetLock(out):
        remove_stale(out)
        staging = _make_staging(out)
        published = False
        try:
            yield staging / "bundle"
            _publishable(staging / "bundle")
            check_target(out, force)  # under the lock, at publish time: what is there now
            try:
                exchange(staging / "bundle", out)
            except OSError as exc:
                raise BertExportError(
                    f"could not move the bundle into {out} ({exc.strerror}); it is unchanged"
                ) from None
            published = True
        except KeyboardInterrupt as exc:  # the CLI says whether the bundle was written before the signal
            exc.bert_export_published = str(out) if published else None  # type: ignore[attr-defined]
            raise
        except OSError as exc:
            if exc.errno not in WRITE_ERRORS:
                raise
            raise BertExportError(
                f"could not write the bundle beside {out} ({exc.strerror}); {out} is unchanged: "
                f"free space or choose another --out"
            ) from None
        finally:
            remove_staging(staging)


def _publishable(directory: Path) -> None:
    """Staging is private (0700); a bundle is shared: files and directories get the umask's modes.

    Links are never followed (a chmod through one would change a file outside the bundle).
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                continue
            os.chmod(p, (0o777 if os.path.isdir(p) else 0o666) & ~umask)


# --------------------------------------------------------------------------- result files (--report, --json, --plot)


def check_output_file(path: Path, option: str) -> Path:
    """Check, before the work starts, that a result file can be written at ``path``.

    Missing parent directories are created now (so a typo in them fails now, not after minutes of
    work); the path must not be a directory or a special file, and its directory must be writable.
    """
    path = Path(path)
    if path.is_dir():
        raise BertExportError(f"{option} {path} is a directory; name a file in it, e.g. {option} {path / 'out.json'}")
    if path.exists() and not path.is_file():
        raise BertExportError(f"{option} {path} exists and is not a regular file; choose another path")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BertExportError(
            f"cannot create the directory of {option} {path} ({exc.strerror}); choose another path"
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BertExportError(
            f"cannot write {option} {path}: {parent} is not writable (read-only?); choose another path"
        )
    return path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a result file through a temporary sibling and ``os.replace``: a failure (disk full, a
    signal) leaves the previous file or none, never half of one; the file gets the umask's mode."""
    import tempfile

    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise BertExportError(f"could not write {path} ({exc.strerror}); nothing was written there") from None
        raise
