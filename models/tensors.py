"""Graph tensor specs (name, element type, axes): what families feed and tasks return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BATCH, SEQUENCE = "batch", "sequence"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, element type and axes (names are dynamic)."""

    name: str
    dtype: str
    axes: tuple[str | int, ...]

    @property
    def has_sequence_axis(self) -> bool:
        return SEQUENCE in self.axes

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.axes)}
