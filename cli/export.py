"""The export commands, one per registered family (``bert-export bert --task qa ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bert_export.cli.optimize_options import optimization_options, options_from
from bert_export.cli.paths import OutputDir, OutputFile
from bert_export.models import FAMILIES, TASKS, BertExportError, ParityError
from bert_export.models.progress import Steps


def _family_command(family_name: str) -> click.Command:
    fam = FAMILIES[family_name]

    @click.command(
        name=family_name, help=f"Export a {family_name} model (default {fam.default_id}) to a verified bundle."
    )
    @click.option("--task", "task", required=True, type=click.Choice(list(TASKS)), help="What the graph computes.")
    @click.option(
        "--model",
        "model",
        default=None,
        type=click.Path(path_type=str),  # an input: no output of this command may touch it
        help=f"Hub id (local cache only) or local directory; default {fam.default_id}.",
    )
    @click.option("--random-init", is_flag=True, help="Random weights from the family's default config (seeded).")
    @click.option("--tiny", is_flag=True, help="With --random-init: the family's small test configuration.")
    @click.option(
        "--config", "config_items", multiple=True, metavar="KEY=VALUE", help="Config overrides for --random-init."
    )
    @click.option(
        "--seed", default=0, show_default=True, help="Seed for --random-init weights and parity text masking."
    )
    @click.option("--num-labels", type=int, default=None, help="Label count for seq-cls / token-cls heads.")
    @click.option(
        "--out",
        type=OutputDir(),
        default=None,
        help="Bundle directory [exports/<family>-<task>-<precision>].",
    )
    @click.option("--force", is_flag=True, help="Replace an existing --out.")
    @click.option("--opset", default=18, show_default=True, help="ONNX opset (18 or newer).")
    @click.option(
        "--max-seq",
        type=int,
        default=None,
        help="Longest sequence the bundle accepts [model max; 2048 for ModernBERT without the banded rewrite or with --runtime trt].",
    )
    @click.option("--no-validate", is_flag=True, help="Skip the parity check against PyTorch (not recommended).")
    @click.option("--report", type=OutputFile(), default=None, help="Also write the parity report JSON here.")
    @click.option("--allow-pickle", is_flag=True, help="Allow loading pickle (.bin) weights you trust.")
    @click.option("--trust-remote-code", is_flag=True, help="Allow model code from the checkpoint (off by default).")
    @click.option("-q", "--quiet", is_flag=True, help="No progress output.")
    @click.option(
        "--precisions",
        default=None,
        metavar="LIST",
        help="One graph per precision in one bundle, e.g. fp32,fp16,int8 (each optimized and gated; the first "
        "is the default). Replaces --fp16/--int8.",
    )
    @optimization_options
    def command(
        task: str,
        model: str | None,
        random_init: bool,
        tiny: bool,
        config_items: tuple[str, ...],
        seed: int,
        num_labels: int | None,
        out: Path | None,
        force: bool,
        opset: int,
        max_seq: int | None,
        no_validate: bool,
        report: Path | None,
        allow_pickle: bool,
        trust_remote_code: bool,
        quiet: bool,
        precisions: str | None,
        **opt: Any,
    ) -> None:
        from bert_export.bundle.publish import write_atomic
        from bert_export.exporter.api import export
        from bert_export.exporter.loading import parse_overrides

        if tiny and not random_init:
            raise BertExportError("--tiny applies to --random-init only")
        overrides = {**(fam.tiny_config if tiny else {}), **parse_overrides(config_items)}
        try:
            result = export(
                fam,
                task,
                model=model,
                random_init=random_init,
                overrides=overrides,
                seed=seed,
                num_labels=num_labels,
                out=out,
                force=force,
                opset=opset,
                max_seq=max_seq,
                validate=not no_validate,
                allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code,
                steps=Steps(quiet=quiet),
                optimization=options_from(opt),
                precisions=precisions,
            )
        except ParityError as exc:  # keep the evidence: the report is what the user needs to act on
            evidence = getattr(exc, "report", None)
            if report is not None and evidence is not None:
                write_atomic(report, evidence.dumps() + "\n", "--report")
            raise
        if report is not None and result.report is not None:
            write_atomic(report, result.report.dumps() + "\n", "--report")

    return command


def family_commands() -> tuple[click.Command, ...]:
    """One export command per family in the registry: a new family needs no CLI change."""
    return tuple(_family_command(name) for name in FAMILIES)
