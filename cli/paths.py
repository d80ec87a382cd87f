"""Which click parameters are outputs, and the one check every command's outputs pass before it runs.

A command declares an output with ``OutputFile`` (a result file: ``--report``, ``--json``, a plot)
or ``OutputDir`` (a directory the command builds: ``--out``, ``--repo``); every other
``click.Path`` parameter is an input. ``guard_outputs`` (applied by ``main.py`` to every
registered command) checks all of a command's outputs together against all of its inputs
(``bundle.publish.check_outputs``) before the command's own code runs, so a new command gets the
rule by declaring its parameters, and the hostile-input tests (tests/test_hostile.py) find its
outputs and inputs from the same declarations.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click


class OutputFile(click.Path):
    """A file the command writes (checked by the output-path rule; ``-`` is stdout where allowed)."""

    def __init__(self, allow_dash: bool = False) -> None:
        super().__init__(path_type=Path, allow_dash=allow_dash)


class OutputDir(click.Path):
    """A directory the command builds. ``replaced``: the directory itself is swapped in (``--out``);
    otherwise the command writes entries inside it (``--repo``), which its writer checks."""

    def __init__(self, replaced: bool = True) -> None:
        super().__init__(path_type=Path)
        self.replaced = replaced


def outputs_and_inputs(
    command: click.Command, values: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """(output files by option, output directories by option, input paths) of one invocation."""
    files: dict[str, Any] = {}
    directories: dict[str, Any] = {}
    inputs: list[Any] = []
    for param in command.params:
        value = values.get(param.name or "")
        if value is None or not isinstance(param.type, click.Path):
            continue
        label = param.opts[-1] if param.opts and param.opts[-1].startswith("-") else (param.name or "").upper()
        if isinstance(param.type, OutputFile):
            files[label] = value
        elif isinstance(param.type, OutputDir):
            directories[label] = value
        else:
            inputs.extend(value if isinstance(value, (list, tuple)) else [value])
    return files, directories, inputs


def check_command_outputs(command: click.Command, values: dict[str, Any]) -> None:
    from bert_export.bundle.publish import check_outputs, refuse_inputs, refuse_inside

    files, directories, inputs = outputs_and_inputs(command, values)
    for param in command.params:
        if isinstance(param.type, OutputDir) and values.get(param.name or "") is not None:
            option = param.opts[-1]
            where = Path(values[param.name or ""]).absolute()
            # --out is replaced whole: never over, inside or around an input. --repo only holds
            # what the command writes: never inside an input (its writer checks the entries).
            refuse_inputs(where, option, inputs) if param.type.replaced else refuse_inside(where, option, inputs)
    check_outputs(files, inputs, directories)


def guard_outputs(command: click.Command) -> click.Command:
    """Wrap ``command`` so that its outputs are checked (``check_command_outputs``) before it runs."""
    callback = command.callback
    if callback is None or getattr(callback, "outputs_guarded", False):
        return command

    @functools.wraps(callback)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check_command_outputs(command, kwargs)
        return callback(*args, **kwargs)

    checked.outputs_guarded = True  # type: ignore[attr-defined]
    command.callback = checked
    return command
