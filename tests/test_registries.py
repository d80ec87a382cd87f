"""Targets and runtimes are registry entries: nothing outside their own modules names one.

A target (``--runtime`` of the family commands: quantize/targets.py) and a runtime (``--runtime`` of
run/validate/bench/serve/compare: runtimes/factory.py) are each declared once, in their own module;
the CLI choices, the option checks, the optimizer, the parity gate and the factory read the entry.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import click
import pytest

from bert_export.cli.main import cli
from bert_export.models import FAMILIES, BertExportError
from bert_export.quantize import targets as target_registry
from bert_export.quantize.pipeline import OptimizeOptions, resolve_int8_mode
from bert_export.quantize.target import Target, standard_onnx_passes
from bert_export.quantize.targets import DEFAULT_TARGET, TARGETS
from bert_export.runtimes.factory import DEFAULT_RUNTIME, RUNTIME_NAMES, RUNTIMES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bundle", "cli", "evaluation", "exporter", "models", "quantize", "runtimes", "serving", "testing")

# A target's own modules: the only places that may spell its names.
TARGET_MODULES = {
    "quantize/target_ort.py": "the ort target's entry",
    "runtimes/ort_runner.py": "ONNX Runtime's runner and its runtime names (ort, ort-cuda, ort-trt)",
    "runtimes/providers.py": "ONNX Runtime's provider order per runtime name",
    "quantize/target_trt.py": "the trt target's entry",
    "runtimes/trt_runner.py": "the native TensorRT runner and its runtime name",
    "runtimes/trt_build.py": "the TensorRT engine: its manifest record key, its caches (also ORT's TensorRT provider's)",
    "quantize/target_openvino.py": "the openvino target's entry",
    "quantize/openvino.py": "the OpenVINO IR builder (the target's artefact)",
    "runtimes/openvino_runner.py": "the OpenVINO runner, its runtime name and the manifest section it reads",
    "quantize/target_ort_mobile.py": "the ort-mobile target's entry",
    "runtimes/ort_mobile_runner.py": "the ORT-format runner and its runtime name",
}
# Not targets, but the same words.
OTHER_MEANINGS = {
    "models/support.py": "'tensorrt' is a pip distribution whose version the manifest records",
    "cli/serve.py": "--backend's choices are Triton's backend names (onnxruntime, tensorrt), not targets",
    "serving/repository.py": "Triton's backend and accelerator names and the engine record; left for serving's "
    "owner: its ORT-accelerator choice still switches on the target name (a Target field would replace it)",
}
NAMES = {"openvino", "trt", "tensorrt"}


def _is_target_name(value: object) -> bool:
    return isinstance(value, str) and (value in NAMES or re.fullmatch(r"ort-[a-z0-9]+", value) is not None)


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _names_runtime(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name in ("runtime", "target")


def target_mentions(root: Path = ROOT) -> list[tuple[str, int, str]]:
    """Every string literal that is a target or runtime name (``"openvino"``, ``"trt"``, ``"tensorrt"``,
    ``"ort-..."``; docstrings and messages that merely mention one are prose, not names), and every
    ``runtime``/``target`` compared with a string (``runtime == "ort"``): ``(file, line, what)``."""
    found = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and id(node) not in docs and _is_target_name(node.value):
                    found.append((rel, node.lineno, f"literal {node.value!r}"))
                elif isinstance(node, ast.Compare):
                    sides = [node.left, *node.comparators]
                    if any(_names_runtime(s) for s in sides) and any(
                        isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides
                    ):
                        found.append((rel, node.lineno, "runtime/target switch"))
    return found


def test_no_target_literals() -> None:
    found = target_mentions()
    outside = [f"{f}:{line}: {what}" for f, line, what in found if f not in TARGET_MODULES and f not in OTHER_MEANINGS]
    assert not outside, "a target or runtime named outside its own modules:\n" + "\n".join(outside)
    allowed = {**TARGET_MODULES, **OTHER_MEANINGS}
    stale = sorted(set(allowed) - {f for f, _, _ in found} - set(TARGET_MODULES))
    assert not stale, f"allowed but no longer needed (drop them from the list): {stale}"
    assert all((ROOT / f).is_file() for f in allowed), "an allowed module was renamed; update the list"


def test_the_scan_sees_names_and_switches(tmp_path: Path) -> None:
    """The grep above can fail: literals and switches are found, prose and docstrings are not."""
    (tmp_path / "exporter").mkdir()
    (tmp_path / "exporter" / "x.py").write_text(
        '"""Mentions openvino in prose."""\n'
        'A = "trt"\n'
        'B = ("ort-cuda", "openvino")\n'
        'def f(o):\n    """The "openvino" target."""\n    return o.runtime == "ort"\n'
        'MSG = "--runtime openvino needs the openvino package"\n'
    )
    hits = Counter(what for _, _, what in target_mentions(tmp_path))
    assert hits == {"literal 'trt'": 1, "literal 'ort-cuda'": 1, "literal 'openvino'": 1, "runtime/target switch": 1}


def _runtime_choices(command: click.Command) -> tuple[str, ...]:
    (param,) = [p for p in command.params if p.name in ("runtime", "opt_runtime")]
    assert isinstance(param.type, click.Choice), f"{command.name} --runtime takes any string"
    assert param.default == (DEFAULT_TARGET if param.name == "opt_runtime" else DEFAULT_RUNTIME)
    return tuple(param.type.choices)


@pytest.mark.parametrize("name", ["validate", "run", "bench", "serve", "compare"])
def test_runtime_choices_come_from_the_runtime_registry(name: str) -> None:
    command = cli.commands[name]
    assert _runtime_choices(command) == RUNTIME_NAMES == tuple(RUNTIMES)
    help_text = next(p for p in command.params if p.name == "runtime").help or ""
    assert all(f"{r} (" in help_text for r in RUNTIMES), help_text  # every runtime, serve's included


def test_export_runtime_choices_come_from_the_target_registry() -> None:
    for family in FAMILIES:
        command = cli.commands[family]
        assert _runtime_choices(command) == tuple(TARGETS)
        help_text = next(p for p in command.params if p.name == "opt_runtime").help or ""
        assert all(t.help in help_text for t in TARGETS.values())


def test_unknown_runtime_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from bert_export.cli.main import main

    for command in ("validate", "bench", "serve", "compare"):
        args = [command, str(tmp_path), *([str(tmp_path)] if command == "compare" else []), "--runtime", "nope"]
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and "unknown runtime 'nope'" in err[0], (command, err)
        assert all(r in err[0] for r in RUNTIMES)


def test_each_target_decides_its_int8_default_once() -> None:
    """``--int8`` without ``--int8-mode``: the target's fixed mode, or (None) the family's measured one."""
    for target in TARGETS.values():
        options = OptimizeOptions(runtime=target.name, int8=True)
        for family in FAMILIES.values():
            resolved, choice = resolve_int8_mode(options, family)
            if target.int8_default is None:
                assert resolved.mode == family.int8_mode and choice["measured"] == family.int8_measured
                assert target.int8_modes and family.int8_mode in target.int8_modes
            else:
                assert resolved.mode == target.int8_default and choice == {}
        assert OptimizeOptions(runtime=target.name).mode is None  # no int8, no mode


@pytest.mark.parametrize("target", list(TARGETS))
def test_option_checks_follow_the_entry(target: str) -> None:
    entry = TARGETS[target]
    for flag in ("fp16", "bf16", "int8"):
        options = OptimizeOptions(runtime=target, **{flag: True})
        if flag in entry.precisions:
            if entry.require is None:
                options.check()
        else:
            with pytest.raises(BertExportError, match=f"--runtime {target} has no --{flag}"):
                options.check()
    for mode in ("dynamic", "static"):
        options = OptimizeOptions(runtime=target, int8=True, int8_mode=mode)
        if mode not in entry.int8_modes:
            with pytest.raises(BertExportError, match=f"takes no --int8-mode {mode}"):
                options.check()
    with pytest.raises(BertExportError, match="unknown --runtime 'nope' for export"):
        OptimizeOptions(runtime="nope").check()


def test_a_new_target_is_one_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target registered in quantize/targets.py (no other change) exports, is gated and recorded."""
    from bert_export.exporter import export

    toy = Target(
        name="toy",
        title="a toy engine (standard ONNX)",
        help="toy stays standard ONNX",
        passes=standard_onnx_passes,
        precisions=("fp32", "int8"),
        lacks={"fp16": "the toy engine has no fp16 kernels"},
        int8_modes=("static",),
        int8_default="static",
    )
    monkeypatch.setitem(target_registry.TARGETS, toy.name, toy)
    with pytest.raises(BertExportError, match="--runtime toy has no --fp16: the toy engine has no fp16 kernels"):
        OptimizeOptions(runtime="toy", fp16=True).check()
    result = export(
        "bert",
        "embed",
        random_init=True,
        overrides=dict(FAMILIES["bert"].tiny_config),
        out=tmp_path / "toy",
        optimization=OptimizeOptions(runtime="toy", int8=True, fallback=False, calib_samples=4),
    )
    manifest: dict[str, Any] = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert manifest["runtime"] == "toy" and manifest["optimization"]["target"] == "toy"
    assert manifest["optimization"]["int8"]["mode"] == "static"
    assert manifest["optimization"]["int8"]["activations"] == "calibrated per tensor, uint8 asymmetric"
    assert manifest["parity"]["runtime"] == "ort" and result.report is not None and result.report.passed
    ops = manifest["graph"]["ops"]
    assert "QuantizeLinear" in ops and not any(op in ops for op in ("Attention", "SkipLayerNormalization"))


def test_long_input_default_is_the_targets() -> None:
    from bert_export.exporter.api import long_inputs_affordable

    local = next(f for f in FAMILIES.values() if f.local_window_attr is not None)
    for target in TARGETS.values():
        assert long_inputs_affordable(local, OptimizeOptions(runtime=target.name)) == target.long_inputs
        plain = dataclasses.replace(OptimizeOptions(runtime=target.name), optimize=False)
        assert not long_inputs_affordable(local, plain)


def test_artefact_folder_per_precision_is_the_one_the_manifest_names(tmp_path: Path) -> None:
    """A multi-precision bundle of a target with an artefact: one folder per precision, each named by its
    graph's record (the IR record named ``openvino/model.xml`` for every graph before, which no runner could open)."""
    import importlib.util

    from bert_export.exporter import validate
    from tests.conftest import needs

    needs(importlib.util.find_spec("nncf") is not None, "needs the openvino extra (openvino, nncf)")
    from bert_export.exporter import export

    (name, entry) = next((n, t) for n, t in TARGETS.items() if t.artefact is not None)
    assert entry.artefact is not None
    out = tmp_path / "multi"
    export(
        "bert",
        "embed",
        random_init=True,
        overrides=dict(FAMILIES["bert"].tiny_config),
        out=out,
        optimization=OptimizeOptions(runtime=name, calib_samples=4, fallback=False),
        precisions="fp32,int8",
    )
    manifest = json.loads((out / "manifest.json").read_text())
    for precision in ("fp32", "int8"):
        record = manifest["graphs"][precision]["optimization"][name]
        folder = f"{entry.artefact.directory}-{precision}"
        assert record["ir"].startswith(folder + "/") and record["ir"] in manifest["files"]
        assert validate(out, runtime=name, precision=precision).passed
