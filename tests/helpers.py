"""Data the tests share: a separable toy task and fast training settings."""

from __future__ import annotations

import numpy as np

POS = ["good", "great", "lovely", "best", "fun", "charming", "funny"]
NEG = ["bad", "awful", "terrible", "worst", "dull", "boring", "sad"]
FILL = ["the", "movie", "film", "was", "is", "a", "plot", "story", "very", "really", "quite"]


def make_texts(n, seed):
    """A separable task: the label decides which sentiment words appear among filler words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        lab = i % 2
        words = list(rng.choice(FILL, size=rng.integers(3, 7)))
        for _ in range(rng.integers(1, 3)):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(POS if lab else NEG)))
        texts.append(" ".join(words))
        labels.append("pos" if lab else "neg")
    return texts, np.array(labels)


#: Settings that train the tiny model's heads in a second or two.
FAST = dict(folds=3, windows=2, max_epochs=40, patience=8, proj_dim=32, progress=False)
