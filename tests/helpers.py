"""Data the tests share: a separable toy task and fast training settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

#: The repository root (benchmarks/ and scripts/ live there, outside the package).
ROOT = Path(__file__).resolve().parents[1]

#: Sentences of 1 to 11 words in the tiny tokenizer's vocabulary (tests/conftest.py), longest first
#: when sorted: the forward-pass tests batch them with padding on either side.
SENTENCES = [
    "a very very long and boring film with a dull plot",
    "lovely charming short movie is fun",
    "not quite the best story",
    "the movie was good",
    "the worst film",
    "great actor",
    "awful",
]

POS = ["good", "great", "lovely", "best", "fun", "charming", "funny"]
NEG = ["bad", "awful", "terrible", "worst", "dull", "boring", "sad"]
FILL = ["the", "movie", "film", "was", "is", "a", "plot", "story", "very", "really", "quite"]


def make_texts(n, seed, *, words=(3, 7), fill=FILL):
    """A separable task: the label decides which sentiment words appear among ``words`` (low,
    high exclusive) filler words drawn from ``fill``."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        lab = i % 2
        words_ = list(rng.choice(fill, size=rng.integers(*words)))
        for _ in range(rng.integers(1, 3)):
            words_.insert(int(rng.integers(0, len(words_) + 1)), str(rng.choice(POS if lab else NEG)))
        texts.append(" ".join(words_))
        labels.append("pos" if lab else "neg")
    return texts, np.array(labels)


#: Settings that train the tiny model's heads in a second or two.
FAST = dict(folds=3, windows=2, max_epochs=40, patience=8, proj_dim=32, progress=False)


def load_script(relpath: str, name: str | None = None):
    """A script of the repository (``benchmarks/reproduce.py``) imported as a module by its path."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
