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

It is also the package's only writer of anything else: result files
(``write_atomic``), ``manifest.json`` (``write_manifest``, ``record_engine``), Triton repositories
(``staged_directories``), under one output-path rule (``check_output_file``, ``check_outputs``):

- never inside (or over) a path the command reads: ``--force`` never replaces a directory that is,
  or contains, an input;
- never through a symbolic link, a device node, a FIFO or a socket, never onto a directory;
- a missing parent directory is created, at write time, and removed again when the write fails;
  a parent that cannot be created (a file in the way, a read-only place) is refused before any work;
- two outputs of one command never share a path (nor lie one inside the other);
- every write goes through a temporary sibling + fsync + rename: a failure (ENOSPC, EROFS,
  ENAMETOOLONG, EACCES, a signal) is one ``error:`` line and leaves the previous file or none,
  with no temporary or lock file behind.
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
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from bert_export.bundle.reader import SCHEMA_VERSION, read_manifest, sha256
from bert_export.models import BertExportError

MANIFEST = "manifest.json"  # the reader's constant too
STAGING_TAG = "bert-export-staging"
OWNER = "owner.json"  # inside the staging directory, beside (never inside) the bundle being built
LOCK_TAG = "bert-export.lock"
MAX_MANIFEST_BYTES = 64 << 20
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
# Errors of the place, not of the export: reported as one line (the rest are bugs, with a traceback).
WRITE_ERRORS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EFBIG,
    errno.EIO,
    errno.ENAMETOOLONG,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EMLINK,
)


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


def check_target(
    out: str | Path,
    force: bool,
    *,
    inputs: Iterable[str | Path | None] = (),
    option: str = "--out",
    noun: str = "bert-export bundle (no manifest.json of ours)",
    nouns: str = "bundles",
    ours: Callable[[Path], bool] = is_our_bundle,
) -> Path:
    """Refuse an ``--out`` that exists without ``--force``, or that ``--force`` must not replace.

    Called before any work starts, and again under the lock just before the swap (the directory
    may have changed meanwhile). ``ours`` says what ``--force`` may replace (a ``noun``: a bundle,
    a Triton model); a directory that is, contains or lies inside one of the command's ``inputs``
    is never replaced. Returns the absolute path (links in the parent are kept as the user wrote
    them; ``out`` itself must not be a link).
    """
    out = Path(os.path.abspath(out))
    _check_name_lengths(out, option)
    refuse_inputs(out, option, inputs)
    if out.is_symlink():
        raise BertExportError(
            f"{option} {out} is a symbolic link; pass the directory it points to, or another {option}"
        )
    if out.exists():
        if not force:
            raise BertExportError(f"{out} already exists; pass --force to replace it, or choose another {option}")
        if not out.is_dir():
            raise BertExportError(
                f"{option} {out} exists and is not a directory; --force replaces only {nouns}: choose another {option}"
            )
        if any(out.iterdir()) and not ours(out):
            raise BertExportError(
                f"{option} {out} is not a {noun} and not empty; "
                f"--force replaces only {nouns}: move your files or choose another {option}"
            )
    writable_ancestor(out, option)
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
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(_me()).encode(), 0)
                except OSError as exc:  # a full or failing disk: no lock file may stay behind
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                    os.close(fd)
                    raise BertExportError(
                        f"cannot write the lock file {self.path} ({exc.strerror}); free space or choose another --out"
                    ) from None
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
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
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
    pattern, found = _staging_pattern(out), list[Path]()
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
def staged_directory(out: Path, force: bool, *, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield an empty directory to build the bundle in; on success swap it in as ``out``.

    Holds ``out``'s lock throughout, first removing dead runs' staging directories. On any
    exception (a failed parity gate, Ctrl-C, SIGTERM) the staging directory is removed and
    ``out`` is untouched.
    """
    with staged_directories([out], force, inputs=inputs) as (directory,):
        yield directory


@contextlib.contextmanager
def staged_directories(
    outs: Sequence[Path],
    force: bool,
    *,
    inputs: Iterable[str | Path | None] = (),
    option: str = "--out",
    noun: str = "bert-export bundle (no manifest.json of ours)",
    nouns: str = "bundles",
    ours: Callable[[Path], bool] = is_our_bundle,
) -> Iterator[list[Path]]:
    """Yield one empty directory per ``outs`` entry; on success swap them all into place.

    All or nothing: every target is checked before anything is written (``check_target``), each
    is built in its own staging directory under its lock, and only when all are complete are they
    swapped in, one ``exchange`` each; a failed swap puts the ones already swapped back. On any
    exception the staging directories, the locks and any parent directory this call created are
    removed, and every target is as it was.
    """
    inputs = list(inputs)
    targets = [check_target(o, force, inputs=inputs, option=option, noun=noun, nouns=nouns, ours=ours) for o in outs]
    if len(set(targets)) != len(targets):
        raise BertExportError(f"two outputs of this command name the same directory: {', '.join(map(str, targets))}")
    created: list[Path] = []
    published = False
    try:
        for parent in dict.fromkeys(t.parent for t in targets):
            created += make_parents(parent, option)
        with contextlib.ExitStack() as stack:
            for target in sorted(targets):
                stack.enter_context(TargetLock(target))
            stagings: list[Path] = []
            stack.callback(_remove_all, stagings)  # before the locks are released
            for target in targets:
                remove_stale(target)
                stagings.append(_make_staging(target))
            try:
                yield [s / "bundle" for s in stagings]
                for staging in stagings:
                    _publishable(staging / "bundle")
                for target in targets:  # under the locks, at publish time: what is there now
                    check_target(target, force, inputs=inputs, option=option, noun=noun, nouns=nouns, ours=ours)
                _swap_all([s / "bundle" for s in stagings], targets)
                published = True
            except KeyboardInterrupt as exc:  # the CLI says whether the output was written before the signal
                exc.bert_export_published = str(targets[0]) if published else None  # type: ignore[attr-defined]
                raise
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        where = targets[0] if len(targets) == 1 else targets[0].parent
        raise BertExportError(
            f"could not write beside {where} ({exc.strerror}); {where} is unchanged: free space or choose another {option}"
        ) from None
    finally:
        if not published:
            remove_created(created)


def _remove_all(stagings: list[Path]) -> None:
    for staging in stagings:
        remove_staging(staging)


def _swap_all(news: list[Path], targets: list[Path]) -> None:
    """``exchange`` each new directory into place; if one fails, undo the ones before it."""
    done: list[tuple[Path, Path, bool]] = []
    try:
        for new, target in zip(news, targets):
            existed = target.exists()
            exchange(new, target)
            done.append((new, target, existed))
    except BaseException as exc:
        for new, target, existed in reversed(done):
            with contextlib.suppress(OSError):
                if existed:
                    _renameat2(new, target, RENAME_EXCHANGE)
                else:
                    shutil.rmtree(new, ignore_errors=True)
                    os.rename(target, new)
        if isinstance(exc, OSError):
            raise BertExportError(
                f"could not move the new files into {targets[len(done)]} ({exc.strerror}); nothing was changed"
            ) from None
        raise


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


# --------------------------------------------------------------------------- the output-path rule

NAME_MAX = 255  # bytes per path component on every filesystem we write to (ext4, xfs, tmpfs, btrfs)
TEMP_NAME = ".bert-export-{}.tmp"  # short, so a long output name never makes its temporary too long


def _check_name_lengths(path: Path, option: str) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX - 64:  # room for the lock and staging names beside it
            raise BertExportError(
                f"{option}: the name {part[:40]}... is {len(os.fsencode(part))} bytes; names are limited to "
                f"{NAME_MAX - 64} bytes here: choose a shorter name"
            )


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def refuse_inputs(out: Path, option: str, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output that is, lies inside, or contains a path the command reads.

    Compared after resolving links (the output's own last component is not followed: an output
    that is a link is refused anyway), so ``B/../B/manifest.json`` or a link to the bundle's
    folder is caught too; a hard link to an input file is caught by its inode.
    """
    real_out = _real(out.parent) / out.name
    for item in inputs:
        if item is None or str(item) in ("", "-") or not os.path.lexists(item):
            continue  # a hub id, or a path that does not exist: nothing on disk to protect
        try:
            real_in = _real(item)
        except (OSError, ValueError):
            continue
        same_inode = False
        with contextlib.suppress(OSError, ValueError):
            same_inode = os.path.samefile(out, item)
        if same_inode or _overlap(real_out, real_in):
            raise BertExportError(
                f"{option} {out} would overwrite {item}, which this command reads; write it elsewhere"
                if real_out == real_in or same_inode or real_out in real_in.parents
                else f"{option} {out} lies inside {item}, which this command reads; write it elsewhere"
            )


def refuse_inside(out: Path, option: str, inputs: Iterable[str | Path | None]) -> None:
    """Refuse a directory the command writes entries into (``--repo``) that is, or lies inside, an
    input; it may contain one (a repository beside the bundle it is made from)."""
    real_out = _real(out.parent) / out.name
    for item in inputs:
        if item is None or str(item) in ("", "-") or not os.path.lexists(item):
            continue
        real_in = _real(item)
        if real_out == real_in or real_in in real_out.parents:
            raise BertExportError(f"{option} {out} lies inside {item}, which this command reads; write it elsewhere")


def writable_ancestor(path: Path, option: str) -> Path:
    """The nearest existing ancestor of ``path``: it must be a writable directory (the missing ones
    between are created at write time)."""
    ancestor = Path(os.path.abspath(path)).parent
    while True:
        try:
            st = os.stat(ancestor)
            break
        except FileNotFoundError:
            ancestor = ancestor.parent
        except OSError as exc:
            raise BertExportError(
                f"cannot create the directory of {option} {path} ({exc.strerror}); choose another path"
            ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise BertExportError(
            f"cannot create the directory of {option} {path}: {ancestor} is not a directory; choose another path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BertExportError(f"cannot write in {ancestor} (read-only?) for {option} {path}; choose another path")
    return ancestor


def check_output_file(path: str | Path, option: str, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Check, before the work starts, that a result file may be written at ``path`` (the rule above).

    Missing parent directories are not created now (a command that fails leaves nothing behind)
    but the nearest existing one must be a writable directory, so a typo fails now, not after
    minutes of work.
    """
    path = Path(path)
    _check_name_lengths(Path(os.path.abspath(path)), option)
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            st = None  # a file in the parent chain: writable_ancestor names it
        else:
            raise BertExportError(f"cannot write {option} {path} ({exc.strerror}); choose another path") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise BertExportError(f"{option} {path} is a symbolic link; name the file it points to, or another path")
        if stat.S_ISDIR(st.st_mode):
            raise BertExportError(
                f"{option} {path} is a directory; name a file in it, e.g. {option} {path / 'out.json'}"
            )
        if not stat.S_ISREG(st.st_mode):
            raise BertExportError(
                f"{option} {path} exists and is not a regular file (a device, FIFO or socket); choose another path"
            )
    writable_ancestor(path, option)
    refuse_inputs(Path(os.path.abspath(path)), option, inputs)
    return path


def check_outputs(
    files: Mapping[str, str | Path | None],
    inputs: Iterable[str | Path | None] = (),
    directories: Mapping[str, str | Path | None] = {},
) -> None:
    """One command's outputs, checked together before any work: each file by the rule, none inside
    an input, and no two of them on one path (``--report X --junit X``) or one inside another
    (``--out B --report B/r.json``: the report would land in the bundle being written)."""
    inputs = list(inputs)
    seen: list[tuple[str, Path]] = []
    for option, path in files.items():
        if path is None or str(path) == "-":
            continue
        check_output_file(path, option, inputs)
        seen.append((option, _real(Path(os.path.abspath(path)).parent) / Path(path).name))
    for option, path in directories.items():
        if path is not None:
            seen.append((option, _real(Path(os.path.abspath(path)).parent) / Path(path).name))
    for i, (a, pa) in enumerate(seen):
        for b, pb in seen[i + 1 :]:
            if _overlap(pa, pb):
                raise BertExportError(
                    f"{a} and {b} name the same path ({pa})"
                    if pa == pb
                    else f"{a} {pa} and {b} {pb} overlap (one inside the other); give each its own path"
                )


def make_parents(directory: Path, option: str = "output") -> list[Path]:
    """Create ``directory`` and its missing parents; return the ones created (deepest last), so a
    failed write can remove them again."""
    missing: list[Path] = []
    d = Path(os.path.abspath(directory))
    while not d.exists() and not d.is_symlink():
        missing.append(d)
        d = d.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
    except OSError as exc:
        remove_created(created)
        raise BertExportError(
            f"cannot create the directory {d} for {option} ({exc.strerror}); choose another path"
        ) from None
    return created


def remove_created(created: list[Path]) -> None:
    """Remove directories ``make_parents`` created (deepest first), only while they are empty."""
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def atomic_path(path: str | Path, option: str | None = None) -> Iterator[Path]:
    """A fresh temporary sibling of ``path`` to write, fsynced and renamed over ``path`` when the block
    ends. A failure (disk full, a read-only place, a name too long, a signal) leaves the previous file
    or none, never half of one, and no temporary; the file gets the umask's mode. The path is checked
    again here (never through a link, onto a directory or a special file); missing parents are
    created, and removed again when the write fails. Every file we write goes through here:
    ``write_atomic`` and ``atomic_file`` for whole files and streams, the corpus path's writers
    (which need a path: pyarrow's ParquetWriter) directly."""
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    check_output_file(path, option or "output")
    parent = path.parent if str(path.parent) else Path(".")
    created = make_parents(parent, option or str(path))
    tmp = parent / TEMP_NAME.format(secrets.token_hex(6))
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_directory(parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        remove_created(created)
        if isinstance(exc, OSError):
            raise BertExportError(f"could not write {label} ({exc.strerror}); nothing was written there") from None
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, option: str | None = None) -> Iterator[IO[bytes]]:
    """``atomic_path`` as an open binary file."""
    with atomic_path(path, option) as tmp, open(tmp, "wb") as fh:
        yield fh


def write_atomic(path: str | Path, data: str | bytes, option: str | None = None) -> None:
    """Write a whole file at once through ``atomic_path``."""
    with atomic_file(path, option) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (a power loss after it must not bring the old file back)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- manifest.json: the only writer


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the sha256 of every file in the bundle (but the manifest) and write manifest.json."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": files}
    write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def record_engine(bundle: Path, file: str, data: bytes, key: str, record: dict[str, Any]) -> dict[str, Any]:
    """The one change a bundle takes after export: a per-GPU engine (``file``, never a listed file)
    and its build record under ``manifest[key]``, each written atomically, under the bundle's lock
    (an export to the same path waits for neither: it fails at once, naming this run)."""
    bundle = Path(os.path.abspath(bundle))
    with TargetLock(bundle):
        manifest = read_manifest(bundle)
        write_atomic(bundle / file, data)
        manifest[key] = record
        write_atomic(bundle / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
