"""Hostile outputs and inputs for every command (issue 24), found by walking the click command tree.

Nothing here lists commands or options by hand: a command's outputs are its parameters of type
``OutputFile`` / ``OutputDir`` (bert_export.cli.paths) and its inputs every other ``click.Path``
parameter, so a new command, or a new path option, is exercised the day it is registered. Each
case runs the command in-process (``bert_export.cli.main.main``) with valid values everywhere but
one hostile path, and requires: exit 2, one ``error:`` line, no traceback, no hang, and nothing
changed on disk (the trees involved are hashed before and after; device nodes keep their type).

The hostile outputs: a file inside the bundle the command reads (an existing one and a new one),
a device node (a private one: never the machine's /dev/null), a symbolic link, a directory, a FIFO, a read-only filesystem, a full
filesystem, and two outputs of one command on one path. The hostile inputs: a FIFO, a device
node, a directory where a file belongs (a file where a directory does), a deeply nested JSON file
and an oversized (sparse) file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from bert_export.cli.main import cli, main
from bert_export.cli.paths import OutputDir, OutputFile
from bert_export.models import FAMILIES

from .conftest import needs

HANG_SECONDS = 60  # a case that takes longer is a hang (the slowest valid run here takes a few seconds)
# Extra arguments that keep a real run short; a command missing here still runs with its required
# parameters filled in (paths: the bundle; choices: a task or the first choice).
QUICK: dict[str, list[str]] = {
    **{family: ["--random-init", "--tiny", "-q"] for family in FAMILIES},
    "bench": ["--batch", "1", "--seq", "8", "--runs", "1", "--warmup", "0", "--no-torch", "-q"],
    "validate": ["-q"],
    "compare": ["-q"],
    "run": ["a short text"],
}


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from walk(command, (*prefix, name))
        else:
            yield (*prefix, name), command


COMMANDS = dict(walk(cli))


def paths_of(command: click.Command) -> tuple[list[click.Parameter], list[click.Parameter], list[click.Parameter]]:
    """(output files, output directories, inputs): every click.Path parameter, by its type."""
    files = [p for p in command.params if isinstance(p.type, OutputFile)]
    dirs = [p for p in command.params if isinstance(p.type, OutputDir)]
    inputs = [p for p in command.params if isinstance(p.type, click.Path) and p not in files + dirs]
    return files, dirs, inputs


def flag(param: click.Parameter) -> str:
    return max(param.opts, key=len)


def valid_argv(path: tuple[str, ...], command: click.Command, bundle: Path, work: Path) -> list[str]:
    """A working invocation: required parameters filled in, then QUICK's extras."""
    args: list[str] = []
    options: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument):
            if isinstance(param.type, click.Path):
                args.append(str(bundle))
            elif param.required:
                pytest.fail(f"{' '.join(path)}: add a value for argument {param.name} to QUICK")
        elif isinstance(param.type, OutputDir):  # never the default (a folder in the current directory)
            options += [flag(param), str(work / f"out-{param.name}")]
        elif param.required:
            if isinstance(param.type, click.Path):
                options += [flag(param), str(bundle)]
            elif isinstance(param.type, click.Choice):
                choices = list(param.type.choices)
                options += [flag(param), "seq-cls" if "seq-cls" in choices else str(choices[0])]
            else:
                pytest.fail(f"{' '.join(path)}: add a value for {flag(param)} to QUICK")
    return [*path, *args, *options, *QUICK.get(path[-1], [])]


def with_value(argv: list[str], command: click.Command, param: click.Parameter, value: str) -> list[str]:
    """``argv`` with ``param`` set to ``value`` (replacing it if present)."""
    if isinstance(param, click.Argument):
        index = [p for p in command.params if isinstance(p, click.Argument)].index(param)
        positions = [i for i, a in enumerate(argv) if i >= 1 and not a.startswith("-")][: index + 1]
        out = list(argv)
        out[positions[index]] = value
        return out
    out = list(argv)
    for opt in param.opts:
        if opt in out:
            out[out.index(opt) + 1] = value
            return out
    return [*out, flag(param), value]


def tree(*roots: Path) -> dict[str, str]:
    """Every entry under the roots, with its type and bytes' hash (links and special files unfollowed)."""
    out: dict[str, str] = {}
    for root in roots:
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() and not root.is_symlink() else [root]:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p)] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < 1 << 26 else f"{st.st_size}"
            else:
                out[str(p)] = f"mode:{stat.S_IFMT(st.st_mode)}"
    return out


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    with deadline(HANG_SECONDS), pytest.raises(SystemExit) as exc:
        main(argv)
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.err + cap.out


def refused(code: int, err: str, argv: list[str], *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, (argv, err)
    assert code == 2, (argv, code, err)
    assert lines and lines[-1].startswith("error: "), (argv, err)
    assert sum(line.startswith("error: ") for line in lines) == 1, (argv, err)
    for needle in needles:
        assert needle in lines[-1], (argv, needle, lines[-1])


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int, read_only: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True, text=True
    )
    needs(mounted.returncode == 0, f"cannot mount a tmpfs (needs root in a mount-capable namespace): {mounted.stderr}")
    try:
        if read_only:
            (path / "seen.txt").write_text("a file on the read-only place\n")
            ok = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True).returncode == 0
            needs(ok, "cannot remount a tmpfs read-only")
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(mount: Path) -> None:
    """Use every byte of a tmpfs."""
    with open(mount / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)


# --------------------------------------------------------------------------- the cases


@pytest.fixture(scope="module")
def bundle(make_bundle: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the cached tiny bundle (a case that wrote into it must not spoil the cache)."""
    dst = tmp_path_factory.mktemp("hostile") / "b"
    shutil.copytree(make_bundle("bert", "seq-cls"), dst)
    return dst


OUTPUT_CASES = ["bundle-file", "bundle-new", "device", "symlink", "directory", "fifo", "read-only"]
OUTPUTS = [
    pytest.param(path, param.name, case, id=f"{'-'.join(path)}-{param.name}-{case}")
    for path, command in COMMANDS.items()
    for param in paths_of(command)[0] + paths_of(command)[1]
    for case in OUTPUT_CASES
]


def test_every_command_is_classified() -> None:
    """Every click.Path parameter of every command is an input or a declared output, and the commands
    known to write files declare them (so the matrix below cannot shrink silently)."""
    outputs = {(path[-1], p.name) for path, c in COMMANDS.items() for p in paths_of(c)[0] + paths_of(c)[1]}
    assert {("validate", "report"), ("validate", "junit"), ("validate", "markdown"), ("compare", "report")} <= outputs
    assert {
        ("bench", "json_path"),
        ("bench", "plot_path"),
        ("triton", "repo"),
        ("bert", "out"),
        ("bert", "report"),
    } <= (outputs)
    assert {("engine", "timing_cache")} <= outputs
    assert len(OUTPUTS) >= 7 * 14


@pytest.mark.parametrize(("path", "param_name", "case"), OUTPUTS)
def test_hostile_output(
    path: tuple[str, ...],
    param_name: str,
    case: str,
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = COMMANDS[path]
    param = next(p for p in command.params if p.name == param_name)
    is_dir = isinstance(param.type, OutputDir)
    work = tmp_path / "work"
    work.mkdir()
    target = work / "target"
    watch = [bundle, work]
    if case.startswith("bundle-") and not any(p.required for p in paths_of(command)[2]):
        pytest.skip("reads no bundle (its inputs, such as --model, have their own tests)")
    with contextlib.ExitStack() as stack:
        if case == "bundle-file":
            target = bundle / "manifest.json"
        elif case == "bundle-new":
            target = bundle / "onnx" / "new"
        elif case == "device":  # a node of our own: a regression must never replace the machine's /dev/null
            target = work / "null"
            try:
                os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))
            except OSError as exc:
                pytest.skip(f"cannot make a device node here ({exc.strerror})")
        elif case == "symlink":
            (work / "victim").write_text("the file a link points to\n")
            target.symlink_to(work / "victim")
        elif case == "directory":
            if is_dir:
                pytest.skip("an output directory may be a directory")
            target.mkdir()
            (target / "keep.txt").write_text("x")
        elif case == "fifo":
            os.mkfifo(target)
        elif case == "read-only":
            mnt = stack.enter_context(tmpfs(tmp_path / "ro", 256, read_only=True))
            target = mnt / "out"
            watch.append(mnt)
        before = tree(*watch)
        argv = with_value(valid_argv(path, command, bundle, work), command, param, str(target))
        code, err = run(capsys, argv)
        refused(code, err, argv)
        assert tree(*watch) == before, argv


SAME_PATH = [
    pytest.param(path, a.name, b.name, id=f"{'-'.join(path)}-{a.name}-{b.name}")
    for path, command in COMMANDS.items()
    for i, a in enumerate(paths_of(command)[0] + paths_of(command)[1])
    for b in (paths_of(command)[0] + paths_of(command)[1])[i + 1 :]
]


@pytest.mark.parametrize(("path", "a", "b"), SAME_PATH)
def test_two_outputs_on_one_path(
    path: tuple[str, ...], a: str, b: str, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = COMMANDS[path]
    pa, pb = (next(p for p in command.params if p.name == n) for n in (a, b))
    work = tmp_path / "work"
    work.mkdir()
    argv = valid_argv(path, command, bundle, work)
    one = work / "same"
    if isinstance(pa.type, OutputDir) or isinstance(pb.type, OutputDir):
        argv = with_value(argv, command, pa, str(one if isinstance(pa.type, OutputDir) else one / "x"))
        argv = with_value(argv, command, pb, str(one if isinstance(pb.type, OutputDir) else one / "x"))
    else:
        argv = with_value(with_value(argv, command, pa, str(one)), command, pb, str(one))
    before = tree(bundle, work)
    code, err = run(capsys, argv)
    refused(code, err, argv)
    assert tree(bundle, work) == before


# Full disk: the command must run to the write. Commands that cannot run here (no GPU, a server)
# still must fail in one line with nothing changed.
FULL = [
    pytest.param(path, param.name, id=f"{'-'.join(path)}-{param.name}")
    for path, command in COMMANDS.items()
    for param in paths_of(command)[0]
    if path[-1] not in FAMILIES or path[-1] == "bert"  # one family's export is enough for the export path
]


@pytest.mark.parametrize(("path", "param_name"), FULL)
def test_output_on_a_full_disk(
    path: tuple[str, ...], param_name: str, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = COMMANDS[path]
    param = next(p for p in command.params if p.name == param_name)
    if param.name == "plot_path":
        pytest.importorskip("matplotlib")
    work = tmp_path / "work"
    work.mkdir()
    with tmpfs(tmp_path / "full", 16) as mnt:
        fill(mnt)
        before = tree(bundle, work, mnt)
        name = "out.png" if "png" in (getattr(param, "help", None) or "").lower() else "out"  # --plot wants .png
        argv = with_value(valid_argv(path, command, bundle, work), command, param, str(mnt / "sub" / name))
        code, err = run(capsys, argv)
        refused(code, err, argv)
        after = tree(bundle, work, mnt)
    assert {k: v for k, v in after.items() if "/out-" not in k} == {
        k: v for k, v in before.items() if "/out-" not in k
    }, "only a command's own output directory (a bundle) may have been written"
    if path[-1] not in ("engine", "serve"):  # these stop earlier here (no GPU, a server)
        assert "No space left on device" in err, err


INPUT_CASES = ["fifo", "device", "wrong-kind", "nested-json", "oversized", "missing"]
# Input-side classes of issue 24 that other branches fix (one strict, bounded JSON reader for
# --expect-ops and model directories). Not strict: they pass once that lands; then drop the entry.
ELSEWHERE: set[tuple[str, str, str]] = set()  # input cases fixed on another branch, not yet merged (none)
INPUTS = [
    pytest.param(
        path,
        param.name,
        case,
        id=f"{'-'.join(path)}-{param.name}-{case}",
        marks=[pytest.mark.xfail(reason="issue 24 input side: fixed on another branch", strict=False)]
        if (path[-1], param.name, case) in ELSEWHERE
        else [],
    )
    for path, command in COMMANDS.items()
    for param in paths_of(command)[2]
    for case in INPUT_CASES
]


@pytest.mark.parametrize(("path", "param_name", "case"), INPUTS)
def test_hostile_input(
    path: tuple[str, ...],
    param_name: str,
    case: str,
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = COMMANDS[path]
    param = next(p for p in command.params if p.name == param_name)
    work = tmp_path / "work"
    work.mkdir()
    hostile = work / ("input.json" if case == "nested-json" else "input")
    if case == "fifo":
        os.mkfifo(hostile)
    elif case == "device":
        hostile = Path("/dev/zero")
    elif case == "wrong-kind":  # a bundle that is a file; a data file that is a directory
        if param.name in ("bundle", "a", "b", "model"):
            hostile.write_text("not a directory\n")
        else:
            hostile.mkdir()
    elif case == "nested-json":
        hostile.write_text("[" * 200_000 + "]" * 200_000)
        if param.name in ("bundle", "a", "b", "model"):
            hostile = work / "dir"
            hostile.mkdir()
            for name in ("manifest.json", "config.json"):
                (hostile / name).write_text("[" * 200_000 + "]" * 200_000)
    elif case == "oversized":
        with open(hostile, "wb") as fh:
            fh.truncate(100 << 20)  # sparse: 100 MiB to a reader (over every limit), nothing on disk
        if param.name in ("bundle", "a", "b", "model"):
            big = hostile
            hostile = work / "dir"
            hostile.mkdir()
            for name in ("manifest.json", "config.json"):
                os.link(big, hostile / name)
    elif case == "missing":
        hostile = work / "does-not-exist"
    before = tree(bundle, work)
    argv = with_value(valid_argv(path, command, bundle, work), command, param, str(hostile))
    code, err = run(capsys, argv)
    refused(code, err, argv)
    assert tree(bundle, work) == before
