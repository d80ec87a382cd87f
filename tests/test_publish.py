"""Writing a bundle never loses data: what --force may replace, the atomic swap, the lock, staging
cleanup, signals at every step, a full and a read-only filesystem, tokenizer copies, result files."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bert_export.bundle import publish
from bert_export.bundle.reader import load_bundle
from bert_export.exporter.loading import Source, copy_tokenizer
from bert_export.models import BertExportError

from .test_bad_input import assert_one_error_line, run_cli

TINY = ("bert", "--task", "seq-cls", "--random-init", "--tiny", "-q")


def ours(parent: Path, out: Path) -> list[str]:
    """Everything bert-export may leave beside --out other than --out itself."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{out.name}."))


def snapshot(bundle: Path) -> dict[str, str]:
    """The verified file table (raises if any checksum fails)."""
    b = load_bundle(bundle)
    return {k: v["sha256"] for k, v in b.manifest["files"].items()} | {
        "manifest": (bundle / "manifest.json").read_text()
    }


@pytest.fixture
def previous(make_bundle, tmp_path: Path) -> Path:
    """A complete bundle at tmp_path/out/b: the one a failed --force must leave intact."""
    import shutil

    out = tmp_path / "out" / "b"
    shutil.copytree(make_bundle("bert", "seq-cls"), out)
    return out


# --------------------------------------------------------------------------- what --force replaces


def test_force_refuses_user_directory(capsys, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "sub").mkdir()
    code, err = run_cli(capsys, *TINY, "--out", str(out), "--force")
    assert_one_error_line(code, err, "is not a bert-export bundle", "--force replaces only bundles")
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "sub").is_dir()
    assert ours(tmp_path, out) == []


@pytest.mark.parametrize(
    "manifest",
    [
        '{"schema_version": "1", "files": {}}',
        '{"files": {}}',
        "[1, 2]",
        "not json",
        '{"schema_version": 1, "files": []}',
    ],
)
def test_force_refuses_foreign_manifest(capsys, tmp_path: Path, manifest: str) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text(manifest)
    code, err = run_cli(capsys, *TINY, "--out", str(out), "--force")
    assert_one_error_line(code, err, "is not a bert-export bundle")
    assert (out / "manifest.json").read_text() == manifest


def test_force_refuses_a_file_and_a_link(capsys, tmp_path: Path, previous: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep")
    code, err = run_cli(capsys, *TINY, "--out", str(target), "--force")
    assert_one_error_line(code, err, "is not a directory")
    assert target.read_text() == "keep"
    link = tmp_path / "link"
    link.symlink_to(previous)
    code, err = run_cli(capsys, *TINY, "--out", str(link), "--force")
    assert_one_error_line(code, err, "is a symbolic link")
    assert link.is_symlink() and snapshot(previous)


def test_force_replaces_empty_dir_and_bundle_atomically(capsys, tmp_path: Path, previous: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(capsys, *TINY, "--out", str(empty), "--force", "--no-validate")
    assert code == 0, err
    assert load_bundle(empty)
    before = snapshot(previous)
    inode = previous.stat().st_ino
    code, err = run_cli(capsys, *TINY, "--out", str(previous), "--force", "--seed", "7", "--no-validate")
    assert code == 0, err
    after = snapshot(previous)
    assert after != before and previous.stat().st_ino != inode  # a new directory was swapped in
    assert ours(previous.parent, previous) == [] and ours(tmp_path, empty) == []
    mode = stat.S_IMODE(previous.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask  # staging is 0700; a published bundle is not


@pytest.mark.parametrize("exists", [True, False])
def test_fallback_swap_without_renameat2(capsys, monkeypatch, tmp_path: Path, previous: Path, exists: bool) -> None:
    """Other systems / filesystems (ENOSYS, EINVAL): the merge fallback; --out never goes missing."""

    def unavailable(src, dst, flags):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(publish, "_renameat2", unavailable)
    out = previous if exists else tmp_path / "out" / "new"
    (previous / "stale-from-old-export.txt").write_text("x")  # an old file the new bundle does not have
    if exists:
        manifest = json.loads((previous / "manifest.json").read_text())
        manifest["files"]["stale-from-old-export.txt"] = {"sha256": "0" * 64, "bytes": 1}
        (previous / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_cli(capsys, *TINY, "--out", str(out), "--force", "--seed", "5", "--no-validate")
    assert code == 0, err
    assert load_bundle(out).manifest["source"]["seed"] == 5
    assert not (out / "stale-from-old-export.txt").exists() or not exists
    assert ours(out.parent, out) == []


def test_merge_interrupted_keeps_a_bundle_force_can_replace(tmp_path: Path, previous: Path, monkeypatch) -> None:
    """The fallback dies half-way (a crash after some files): --out exists, is rejected by its checksums
    (never silently mixed), and is still ours for the next --force."""
    new = tmp_path / "new"
    import shutil

    shutil.copytree(previous, new)
    (new / "config.json").write_text('{"changed": true}')
    calls = []
    real = os.replace

    def dying(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(a, b)

    monkeypatch.setattr(os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        publish._merge(new, previous)
    monkeypatch.setattr(os, "replace", real)
    assert previous.is_dir() and publish.is_our_bundle(previous)
    with pytest.raises(BertExportError, match="modified after export|does not match"):
        load_bundle(previous)


# --------------------------------------------------------------------------- the lock


def test_second_export_fails_while_first_holds_the_lock(capsys, tmp_path: Path, previous: Path) -> None:
    before = snapshot(previous)
    with publish.TargetLock(previous.absolute()):
        code, err = run_cli(capsys, *TINY, "--out", str(previous), "--force")
    assert_one_error_line(code, err, "another export (pid", "is writing", str(previous))
    assert snapshot(previous) == before and ours(previous.parent, previous) == []


# The first export holds in its "Exporting" step (lock taken) until the test creates a file.
HOLD = r"""
import contextlib, os, sys, time
from bert_export.models import progress
go = sys.argv[1]
real_step = progress.Steps.step

@contextlib.contextmanager
def step(self, title):
    with real_step(self, title):
        deadline = time.time() + 240
        while title.startswith("Exporting") and not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.05)
        yield

progress.Steps.step = step
from bert_export.cli.main import main
main(sys.argv[2:])
"""


def test_two_concurrent_exports(tmp_path: Path, previous: Path) -> None:
    """Two real processes: one wins and publishes a complete bundle, the other fails in one line."""
    lock, go = publish.lock_path(previous.absolute()), tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(go), *TINY, "--out", str(previous), "--force", "--seed", "11"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_export.cli.main",
            *TINY,
            "--out",
            str(previous),
            "--force",
            "--seed",
            "12",
            "--no-validate",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    go.touch()  # the first export may go on
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2 and second.stderr.startswith("error: another export (pid"), second.stderr
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert load_bundle(previous).manifest["source"]["seed"] == 11
    assert ours(previous.parent, previous) == []


def test_lock_file_removal_is_safe(tmp_path: Path) -> None:
    out = (tmp_path / "o").absolute()
    a = publish.TargetLock(out).acquire()
    with pytest.raises(BertExportError, match="another export"):
        publish.TargetLock(out).acquire()
    a.release()
    assert not publish.lock_path(out).exists()
    b = publish.TargetLock(out).acquire()  # after removal a new lock file is taken
    with pytest.raises(BertExportError, match="another export"):
        publish.TargetLock(out).acquire()
    b.release()


# --------------------------------------------------------------------------- stale staging


def _staging(out: Path, pid: int, owner: bool = True) -> Path:
    path = out.with_name(f".{out.name}.{publish.STAGING_TAG}.{pid}.{'ab' * 8}")
    (path / "bundle").mkdir(parents=True)
    (path / "bundle" / "model.onnx").write_bytes(b"partial")
    if owner:
        (path / publish.OWNER).write_text(json.dumps({"pid": pid, "start": None}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_export_removes_dead_runs_staging_only(capsys, tmp_path: Path, previous: Path) -> None:
    out = previous.absolute()
    dead = _staging(out, _dead_pid())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = _staging(out, sleeper.pid)
        unowned = _staging(out, _dead_pid(), owner=False)
        other = out.with_name(f".{out.name}.tmp-user")  # looks similar, is not ours
        other.mkdir()
        code, err = run_cli(capsys, *TINY, "--out", str(previous), "--force", "--no-validate")
        assert code == 0, err
        assert not dead.exists()
        assert alive.exists() and unowned.exists() and other.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert publish.remove_stale(out) == [alive]  # its owner is gone now
    assert not alive.exists()


def test_stale_staging_never_follows_links(tmp_path: Path) -> None:
    out = (tmp_path / "o").absolute()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / publish.OWNER).write_text(json.dumps({"pid": _dead_pid()}))
    (victim / "precious").write_text("x")
    link = out.with_name(
        f".{out.name}.{publish.STAGING_TAG}.{json.loads((victim / publish.OWNER).read_text())['pid']}.{'cd' * 8}"
    )
    link.symlink_to(victim)
    assert publish.remove_stale(out) == []
    assert (victim / "precious").exists()


# --------------------------------------------------------------------------- signals at every step

DRIVER = r"""
import contextlib, os, signal, sys, time
from bert_export.bundle import publish
from bert_export.models import progress
sig, at = getattr(signal, sys.argv[1]), sys.argv[2]

def fire():
    os.kill(os.getpid(), sig)
    time.sleep(30)  # the signal lands here

real_step = progress.Steps.step

@contextlib.contextmanager
def step(self, title):
    with real_step(self, title):
        if title.startswith(at):
            fire()
        yield

progress.Steps.step = step
real_exchange = publish.exchange

def exchange(new, out):
    if at == "swap":
        fire()
    real_exchange(new, out)
    if at == "swapped":
        fire()

publish.exchange = exchange
from bert_export.cli.main import main
main(sys.argv[3:])
"""

# (signal, where) -> expected exit code. Steps are export()'s (exporter/api.py), then the swap.
SIGNAL_CASES = [
    ("SIGTERM", "Loading", 143),
    ("SIGTERM", "Exporting", 143),
    ("SIGTERM", "Checking parity", 143),
    ("SIGTERM", "swap", 143),
    ("SIGTERM", "swapped", 143),
    ("SIGINT", "Checking parity", 130),
    ("SIGINT", "swap", 130),
    ("SIGKILL", "Checking parity", -9),
    ("SIGKILL", "swap", -9),
    ("SIGKILL", "swapped", -9),
]


def default_signals() -> None:
    """preexec_fn for children that are sent SIGINT/SIGTERM: their default dispositions, whatever ours are.

    A suite started in the background (``nohup pytest &``) inherits SIGINT as ignored; a child would
    inherit that too, Python would not install its KeyboardInterrupt handler, and the SIGINT cases
    would wait out their sleep instead of exiting 130 (tests/test_first_run.py proves the reset)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)


@pytest.mark.parametrize(("sig", "at", "rc"), SIGNAL_CASES, ids=[f"{s}-{a}" for s, a, _ in SIGNAL_CASES])
def test_signal_at_each_step(tmp_path: Path, previous: Path, sig: str, at: str, rc: int) -> None:
    before = snapshot(previous)
    fast = [] if at == "Checking parity" else ["--no-validate"]  # parity only where the signal lands in it
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, sig, at, *TINY, "--out", str(previous), "--force", "--seed", "9", *fast],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=default_signals,
    )
    assert proc.returncode == rc, proc.stderr
    if rc > 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert lines[-1].startswith("error: interrupted") and "Traceback" not in proc.stderr, proc.stderr
    after = snapshot(previous)  # raises unless --out is a complete, verified bundle
    if at == "swapped":
        assert load_bundle(previous).manifest["source"]["seed"] == 9  # the new one, complete
    else:
        assert after == before  # the previous one, untouched
    if sig == "SIGKILL":  # nothing could run: the staging stays until the next export to this --out
        left = ours(previous.parent, previous)
        assert any(publish.STAGING_TAG in n for n in left) or at == "Loading"
        publish.remove_stale(previous.absolute())
        publish.lock_path(previous.absolute()).unlink(missing_ok=True)  # ours; the next export would reuse it
    assert ours(previous.parent, previous) == []


# --------------------------------------------------------------------------- full and read-only filesystems


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {proc.stderr.strip()[:120]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _size_kb(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) // 1024


@pytest.mark.parametrize("room", [0.3, 0.9], ids=["fails-early", "fails-late"])
def test_full_filesystem(capsys, tmp_path: Path, make_bundle, room: float) -> None:
    import shutil

    src = make_bundle("bert", "seq-cls")
    size = _size_kb(src)
    with tmpfs(tmp_path / "mnt", int(size * (1 + room)) + 64) as mnt:
        out = mnt / "b"
        shutil.copytree(src, out)
        before = snapshot(out)
        code, err = run_cli(capsys, *TINY, "--out", str(out), "--force", "--seed", "4")
        assert_one_error_line(code, err, "No space left on device", "is unchanged")
        assert snapshot(out) == before
        assert sorted(p.name for p in mnt.iterdir()) == ["b"]


def test_read_only_target(capsys, tmp_path: Path, make_bundle) -> None:
    import shutil

    src = make_bundle("bert", "seq-cls")
    with tmpfs(tmp_path / "mnt", _size_kb(src) + 1024) as mnt:
        out = mnt / "b"
        shutil.copytree(src, out)
        before = snapshot(out)
        if subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount the tmpfs read-only")
        code, err = run_cli(capsys, *TINY, "--out", str(out), "--force")
        assert_one_error_line(code, err, "cannot write in", "read-only")
        code, err = run_cli(capsys, *TINY, "--out", str(mnt / "new"))
        assert_one_error_line(code, err, "cannot write in")
        assert snapshot(out) == before and sorted(p.name for p in mnt.iterdir()) == ["b"]


# --------------------------------------------------------------------------- tokenizer files


def _source(directory: Path) -> Source:
    return Source(
        model=None, config=None, kind="local", ref=str(directory), directory=directory, tokenizer_dir=directory
    )  # type: ignore[arg-type]


def test_tokenizer_symlink_refused(tmp_path: Path, minilm_dir: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    secret.chmod(0o600)
    (model / "vocab.txt").write_bytes((minilm_dir / "vocab.txt").read_bytes())
    (model / "tokenizer.json").symlink_to(secret)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BertExportError, match="is a symbolic link") as exc:
        copy_tokenizer(_source(model), dest)
    assert "\n" not in str(exc.value)
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.json").symlink_to("/etc/hostname")
    with pytest.raises(BertExportError, match="symbolic link"):
        copy_tokenizer(_source(model), tmp_path / "dest")


def test_tokenizer_fifo_refused_without_hanging(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    os.mkfifo(model / "vocab.txt")
    with pytest.raises(BertExportError, match="not a regular file"):
        copy_tokenizer(_source(model), tmp_path)


def test_tokenizer_copy_gets_bundle_modes(tmp_path: Path, minilm_dir: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name in ("vocab.txt", "tokenizer.json"):
        (model / name).write_bytes((minilm_dir / name).read_bytes())
        (model / name).chmod(0o600)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert copy_tokenizer(_source(model), dest) == ["tokenizer.json", "vocab.txt"]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("vocab.txt", "tokenizer.json"):
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o666 & ~umask
        assert (dest / name).read_bytes() == (minilm_dir / name).read_bytes()


def test_tokenizer_links_inside_hf_cache_are_followed(tmp_path: Path, minilm_dir: Path) -> None:
    """The Hugging Face cache's own layout: snapshots/<rev>/file -> ../../blobs/<hash>."""
    repo = tmp_path / "hub" / "models--acme--m"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "blobs" / "abc").write_bytes((minilm_dir / "vocab.txt").read_bytes())
    (snap / "vocab.txt").symlink_to("../../blobs/abc")
    dest = tmp_path / "dest"
    dest.mkdir()
    assert copy_tokenizer(_source(snap), dest) == ["vocab.txt"]
    assert not (dest / "vocab.txt").is_symlink()


# --------------------------------------------------------------------------- result files


def test_report_path_checked_before_work(capsys, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, err = run_cli(capsys, *TINY, "--out", str(out), "--report", str(tmp_path))
    assert_one_error_line(code, err, "--report", "is a directory")
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(capsys, *TINY, "--out", str(out), "--report", str(blocker / "r.json"))
    assert_one_error_line(code, err, "cannot create the directory of --report")
    assert not out.exists()


def test_write_atomic_keeps_previous_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "r.json"
    target.write_text("previous")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BertExportError, match="No space left"):
        publish.write_atomic(target, "new")
    assert target.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# --------------------------------------------------------------------------- one output-path rule (issue 24)


def test_export_to_a_full_disk_leaves_no_lock(capsys, tmp_path: Path) -> None:
    """The lock's owner record cannot be written on a full disk: one line, no .NAME.bert-export.lock."""
    with tmpfs(tmp_path / "mnt", 16) as mnt:
        with open(mnt / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)
        code, err = run_cli(capsys, *TINY, "--out", str(mnt / "b"))
        assert_one_error_line(code, err, "No space left on device")
        assert sorted(p.name for p in mnt.iterdir()) == ["filler"]


def test_missing_report_folders_are_created_by_every_option_alike(capsys, tmp_path: Path, make_bundle) -> None:
    """--report used to create a missing folder and --junit to refuse one: now each creates it, at write
    time; a command refused before writing leaves no folder behind."""
    bundle = make_bundle("bert", "seq-cls")
    report, junit, md = tmp_path / "a/r.json", tmp_path / "b/c/j.xml", tmp_path / "d/m.md"
    code, err = run_cli(capsys, "validate", str(bundle), "-q", "--report", str(report), "--junit", str(junit))
    assert code == 0, err
    assert json.loads(report.read_text())["passed"] is True and junit.read_text().startswith("<?xml")
    code, err = run_cli(capsys, "validate", str(bundle), "-q", "--markdown", str(md), "--junit", str(tmp_path))
    assert_one_error_line(code, err, "--junit", "is a directory")
    assert not (tmp_path / "d").exists()


def test_report_and_junit_on_one_path_are_refused(capsys, tmp_path: Path, make_bundle) -> None:
    bundle = make_bundle("bert", "seq-cls")
    same = tmp_path / "out"
    code, err = run_cli(capsys, "validate", str(bundle), "-q", "--report", str(same), "--junit", str(same))
    assert_one_error_line(code, err, "--report and --junit name the same path")
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ("validate", "{b}", "--report", "{b}/manifest.json"),
        ("validate", "{b}", "--junit", "{b}/golden.json"),
        ("compare", "{b}", "{b}", "--markdown", "{b}/onnx/model.onnx"),
        ("validate", "{b}", "--report", "{b}/../b/new.json"),
        ("compare", "{b}", "{b}", "--report", "{link}/x.json"),
    ],
    ids=["report-manifest", "junit-golden", "markdown-graph", "dotdot-new-file", "through-a-linked-folder"],
)
def test_reports_never_land_in_the_bundle_being_checked(capsys, tmp_path: Path, make_bundle, argv) -> None:
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(make_bundle("bert", "seq-cls"), bundle)
    (tmp_path / "link").symlink_to(bundle)
    before = snapshot(bundle)
    code, err = run_cli(capsys, *(a.format(b=bundle, link=tmp_path / "link") for a in argv), "-q")
    assert_one_error_line(code, err, "which this command reads")
    assert snapshot(bundle) == before and sorted(p.name for p in bundle.rglob("*")) == sorted(
        p.name for p in make_bundle("bert", "seq-cls").rglob("*")
    )
    load_bundle(bundle)


def private_device(directory: Path) -> Path:
    """A character device like /dev/null, made for the test: a regression then replaces this node,
    never the machine's /dev/null (the bug this guards against did exactly that, as root)."""
    node = directory / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError as exc:
        pytest.skip(f"cannot make a device node here ({exc.strerror})")
    return node


@pytest.mark.parametrize("where", ["device", "stdout-link", "link"])
def test_junit_and_markdown_never_replace_devices_or_links(capsys, tmp_path: Path, make_bundle, where: str) -> None:
    bundle = make_bundle("bert", "seq-cls")
    if where == "device":
        target = private_device(tmp_path)
    elif where == "stdout-link":  # as /dev/stdout is, but ours
        target = tmp_path / "stdout"
        target.symlink_to("/proc/self/fd/1")
    else:
        (tmp_path / "victim").write_text("keep")
        target = tmp_path / "link"
        target.symlink_to(tmp_path / "victim")
    for option in ("--junit", "--markdown", "--report"):
        kind = os.lstat(target).st_mode
        code, err = run_cli(capsys, "validate", str(bundle), "-q", option, str(target))
        assert_one_error_line(code, err, option)
        assert os.lstat(target).st_mode == kind
    assert where != "link" or (tmp_path / "victim").read_text() == "keep"


def test_long_output_name_is_one_line(capsys, tmp_path: Path, make_bundle) -> None:
    bundle = make_bundle("bert", "seq-cls")
    code, err = run_cli(capsys, "validate", str(bundle), "-q", "--report", str(tmp_path / ("r" * 300)))
    assert_one_error_line(code, err, "--report", "shorter name")
    code, err = run_cli(capsys, *TINY, "--out", str(tmp_path / ("o" * 300)))
    assert_one_error_line(code, err, "--out", "shorter name")
    assert sorted(tmp_path.iterdir()) == []


def test_export_out_never_over_or_inside_its_model_directory(capsys, tmp_path: Path, minilm_dir: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    before = sorted(p.name for p in model.rglob("*"))
    for out in (model / "bundle", model, tmp_path):
        code, err = run_cli(
            capsys, "bert", "--task", "embed", "--model", str(model), "--out", str(out), "--force", "-q"
        )
        assert_one_error_line(code, err, "which this command reads")
    assert sorted(p.name for p in model.rglob("*")) == before


def test_write_atomic_failures_leave_nothing(tmp_path: Path, monkeypatch) -> None:
    """A failed write removes its temporary and the folders it created; the previous file stays."""
    target = tmp_path / "new" / "deeper" / "r.json"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BertExportError, match="No space left") as exc:
        publish.write_atomic(target, "new", "--report")
    assert "\n" not in str(exc.value) and "--report" in str(exc.value)
    assert sorted(tmp_path.iterdir()) == []


def test_manifest_is_written_only_by_the_bundle_writer() -> None:
    """One manifest writer: no module outside bundle/ writes manifest.json or keeps an atomic writer."""
    import re

    root = Path(publish.__file__).resolve().parent.parent
    offenders = []
    for path in root.glob("*/*.py"):
        if path.parent.name in ("bundle", "tests", ".venv") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"os\.replace\(|tempfile\.mkstemp|NamedTemporaryFile\(.*delete=False", text):
            offenders.append(f"{path.relative_to(root)}: its own atomic writer")
        if re.search(r"""(MANIFEST|["']manifest\.json["'])\)?\s*\.write_(text|bytes)|_write\w*\([^)]*manifest""", text):
            offenders.append(f"{path.relative_to(root)}: writes manifest.json")
    assert offenders == []
