""":class:`Split` and :class:`Dataset`: texts with integer labels, class names, and fingerprints that
key every cache entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from layerfuse.config import DEFAULT_SPLIT_SEED
from layerfuse.data.sampling import allocate, pick, seeded_rng
from layerfuse.errors import LayerfuseError

__all__ = ["SPLIT_NAMES", "texts_fingerprint", "Split", "Dataset"]

SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")


# ---------------------------------------------------------------------------------------------
# Hashing helpers


def _put_str(h, s: str) -> None:
    b = s.encode("utf-8", "surrogatepass")
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)


def _put_int(h, n: int) -> None:
    h.update(int(n).to_bytes(8, "little"))


def _put_texts(h, texts: list[str]) -> None:
    _put_int(h, len(texts))
    for t in texts:
        _put_str(h, t)


def texts_fingerprint(texts: list[str]) -> str:
    """16 hex chars of sha256 over a list of texts (order matters); extraction caches key on it."""
    h = hashlib.sha256(b"layerfuse.texts.v1\0")
    _put_texts(h, list(texts))
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Split and Dataset


@dataclass(frozen=True, eq=False)
class Split:
    """Texts and their labels (``int64`` indices into :attr:`Dataset.classes`).

    ``texts`` is copied to a new list and ``labels`` to a new read-only ``int64`` array.
    """

    texts: list[str]
    labels: np.ndarray

    def __post_init__(self) -> None:
        texts = list(self.texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"Split.texts[{i}] is {type(t).__name__}, expected str")
        raw = np.asarray(self.labels)
        if raw.size and raw.dtype.kind not in "iu":
            raise TypeError(f"Split.labels must be integers, got dtype {raw.dtype}")
        if raw.ndim != 1:
            raise ValueError(f"Split.labels must be 1-D, got shape {raw.shape}")
        labels = np.array(raw, dtype=np.int64)
        if len(labels) != len(texts):
            raise ValueError(f"Split has {len(texts)} texts but {len(labels)} labels")
        labels.flags.writeable = False
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.texts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return self.texts == other.texts and np.array_equal(self.labels, other.labels)

    __hash__ = None  # type: ignore[assignment]  # holds a list: not hashable

    def __repr__(self) -> str:
        return f"Split(n={len(self.texts)})"

    def counts(self, n_classes: int) -> np.ndarray:
        """Number of examples per class index (length ``n_classes``)."""
        return np.bincount(self.labels, minlength=n_classes)[:n_classes]

    def take(self, indices) -> "Split":
        """A new split with the rows at ``indices`` (in the order given)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Split([self.texts[i] for i in idx], self.labels[idx])


@dataclass
class Dataset:
    """A text-classification dataset: class names plus ``train``/``validation``/``test`` splits."""

    name: str
    classes: list[str]
    splits: dict[str, Split]  # ordered: "train", optional "validation", "test"
    source: str  # one line: where it came from

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"Dataset {self.name!r}: duplicate class names {dup}")
        unknown = [s for s in self.splits if s not in SPLIT_NAMES]
        if unknown:
            raise ValueError(f"Dataset {self.name!r}: unknown split(s) {unknown}; allowed: {', '.join(SPLIT_NAMES)}")
        ordered = {}
        for s in SPLIT_NAMES:
            if s in self.splits:
                sp = self.splits[s]
                if not isinstance(sp, Split):
                    raise TypeError(f"Dataset {self.name!r}: split {s!r} is {type(sp).__name__}, expected Split")
                if len(sp) and (sp.labels.min() < 0 or sp.labels.max() >= len(self.classes)):
                    raise ValueError(
                        f"Dataset {self.name!r}: split {s!r} has labels outside 0..{len(self.classes) - 1}")
                ordered[s] = sp
        self.splits = ordered
        self.source = " ".join(str(self.source).split())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"Dataset(name={self.name!r}, n_classes={len(self.classes)}, {sizes})"

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, split: str) -> Split:
        try:
            return self.splits[split]
        except KeyError:
            raise LayerfuseError(
                f"dataset '{self.name}' has no split '{split}'; available: {', '.join(self.splits)}") from None

    def label_names(self, split: str) -> list[str]:
        """The labels of ``split`` as class names."""
        return [self.classes[i] for i in self[split].labels]

    # -- fingerprints ------------------------------------------------------------------------

    def fingerprint(self, split: str | None = None) -> str:
        """16 hex chars of sha256 over classes, texts (in order) and labels.

        With ``split`` only that split counts (its name does not); without, every split does
        (with its name).
        """
        h = hashlib.sha256(b"layerfuse.dataset.v1\0")
        _put_int(h, len(self.classes))
        for c in self.classes:
            _put_str(h, c)
        names = [split] if split is not None else list(self.splits)
        if split is not None:
            self[split]  # noqa: B018 -- raises a clear error for a missing split
        else:
            _put_int(h, len(names))
        for s in names:
            sp = self.splits[s]
            if split is None:
                _put_str(h, s)
            _put_texts(h, sp.texts)
            h.update(sp.labels.astype("<i8", copy=False).tobytes())
        return h.hexdigest()[:16]

    def text_fingerprint(self, split: str) -> str:
        """16 hex chars of sha256 over the texts of ``split`` only (order matters)."""
        return texts_fingerprint(self[split].texts)

    # -- derived datasets --------------------------------------------------------------------

    def subsample(self, n: int, seed: int = DEFAULT_SPLIT_SEED) -> "Dataset":
        """At most ``n`` texts per split, stratified by label, deterministic in ``seed``.

        Per-class quotas are proportional to the class sizes (largest remainder); when ``n`` is
        at least the number of classes present in a split, every such class keeps at least one
        example. Kept rows stay in their original order. Splits already within ``n`` are kept
        whole. The name becomes ``"<name>[:n]"`` (``"<name>[:n@seed]"`` for a seed other than 0)
        when anything was cut; ``classes`` never changes.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise LayerfuseError(f"subsample size (`limit`) must be a positive integer, got {n!r}")
        n = int(n)
        k = len(self.classes)
        new: dict[str, Split] = {}
        cut = False
        for s, sp in self.splits.items():
            if len(sp) <= n:
                new[s] = sp
                continue
            cut = True
            counts = sp.counts(k)
            lo = np.minimum(counts, 1) if n >= int((counts > 0).sum()) else np.zeros(k, dtype=np.int64)
            quotas = allocate(counts, n, lo, counts)
            rng = seeded_rng(seed, "subsample", s)
            new[s] = sp.take(pick(sp.labels, quotas, rng))
        if not cut:
            return Dataset(self.name, list(self.classes), dict(self.splits), self.source)
        suffix = f"[:{n}]" if seed == 0 else f"[:{n}@{seed}]"
        return Dataset(self.name + suffix, list(self.classes), new,
                       f"{self.source}; stratified subsample of at most {n} per split, seed {seed}")

    def summary(self) -> dict:
        """Name, source, split sizes, classes and per-split class counts (JSON-ready)."""
        k = len(self.classes)
        return {
            "name": self.name,
            "source": self.source,
            "n_classes": k,
            "classes": list(self.classes),
            "splits": {s: len(sp) for s, sp in self.splits.items()},
            "class_counts": {
                s: {c: int(v) for c, v in zip(self.classes, sp.counts(k))} for s, sp in self.splits.items()
            },
        }
