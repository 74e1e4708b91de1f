"""A *source*: which layers of which model feed the fusion, and how they are combined.

:class:`SourceSpec` is the one definition (model, pooling, layers, combine, fingerprint);
:func:`build_sources` turns one model's ``[depth+1, N, d]`` pooled layers into the fusion inputs it
describes. :data:`COMBINES` lists the ways layers combine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from layerfuse.errors import LayerfuseError

__all__ = ["COMBINES", "SourceSpec", "build_sources", "check_layers"]

#: How the selected layers of one model become fusion inputs (see :class:`SourceSpec`).
COMBINES = ("single", "average", "separate", "mix")


def check_layers(layers, combine: str, what: str) -> list[int]:
    """The one check of a layer list and its combination, for a source or a selection: returns
    the layers as ints, or raises naming ``what``."""
    if combine not in COMBINES:
        raise LayerfuseError(f"{what}: unknown layer combination combine={combine!r}: choose from {', '.join(COMBINES)}")
    if (isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__")
            or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 0 for x in layers)):
        raise LayerfuseError(f"{what}: layers must be a list of layer numbers >= 0, got {layers!r}")
    layers = [int(x) for x in layers]
    if not layers:
        raise LayerfuseError(f"{what}: no layers selected")
    if combine == "single" and len(layers) != 1:
        raise LayerfuseError(f"{what}: combine='single' takes one layer, got {layers}")
    return layers


@dataclass
class SourceSpec:
    """Which layers of which model feed the fusion, and how they are combined.

    ``single``: one layer → one ``[N, d]`` source; ``average``: mean of the layers → one ``[N, d]``;
    ``separate``: one ``[N, d]`` source per layer; ``mix``: one ``[N, K, d]`` source for a learned
    scalar mix.
    """

    model: str
    pooling: str
    layers: list[int]
    combine: str = "single"
    fingerprint: str = ""

    def __post_init__(self):
        self.layers = check_layers(self.layers, self.combine, f"source {self.model}")

    @property
    def depth(self) -> int:
        return max(self.layers)

    def label(self) -> str:
        if self.combine == "average":
            span = (f"{self.layers[0]}-{self.layers[-1]}" if self.layers == list(range(self.layers[0], self.layers[-1] + 1))
                    else "+".join(map(str, self.layers)))
            return f"{self.model}[avg {span}]/{self.pooling}"
        if self.combine == "single":
            return f"{self.model}[{self.layers[0]}]/{self.pooling}"
        return f"{self.model}[{self.combine} {','.join(map(str, self.layers))}]/{self.pooling}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SourceSpec":
        return cls(**{k: d[k] for k in ("model", "pooling", "layers", "combine", "fingerprint") if k in d})


def build_sources(spec: SourceSpec, layers_array) -> list[np.ndarray]:
    """Turn ``[depth+1, N, d]`` pooled layers of one model into the fusion inputs ``spec`` describes."""
    if layers_array.shape[0] <= spec.depth:
        raise LayerfuseError(f"{spec.model}: layer {spec.depth} needed, only 0..{layers_array.shape[0] - 1} available")
    if spec.combine == "single":
        return [np.asarray(layers_array[spec.layers[0]], dtype=np.float32)]
    if spec.combine == "average":
        acc = np.zeros(layers_array.shape[1:], dtype=np.float32)
        for k in spec.layers:
            acc += np.asarray(layers_array[k], dtype=np.float32)
        return [acc / len(spec.layers)]
    if spec.combine == "separate":
        return [np.asarray(layers_array[k], dtype=np.float32) for k in spec.layers]
    return [np.stack([np.asarray(layers_array[k], dtype=np.float32) for k in spec.layers], axis=1)]
