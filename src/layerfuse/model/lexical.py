"""The ``tfidf`` lexical source: a classic sparse baseline turned into a source like a model's.

TF-IDF over word 1-2-grams (``min_df=2``, sublinear tf) is too wide for the fusion heads, so the
source a fusion sees is the per-class decision scores of a linear SVM trained on it (``[N, C]``;
``[N, 1]`` for two classes):

* on the training split the scores are **out-of-fold** (stratified k-fold on train: a text's
  scores come from an SVM that never saw it), so a head trained on them learns how far the
  lexical model can be trusted instead of its training-set fit;
* the SVM's ``C`` is the one of ``C_GRID`` with the best out-of-fold macro-F1 on train;
* on every other split (test, and raw texts at predict time) the scores come from the SVM
  trained on all of train with that ``C``, saved in the classifier folder as plain arrays
  (vocabulary, idf, coefficients; no pickle).

:func:`lexical_embeddings` wraps the scores in the shape of :class:`layerfuse.embed.Embeddings`
(one "layer", pooling ``tfidf``), so layer profiles, grids, fusions and saved classifiers treat
``tfidf`` like any model reference. Character n-grams were not added: see docs/selection.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from layerfuse.config import DEFAULT_BATCH_TOKENS, DEFAULT_FOLDS, DEFAULT_MAX_LENGTH, DEFAULT_SEED
from layerfuse.data.sampling import stratified_folds
from layerfuse.errors import LayerfuseError

__all__ = ["LEXICAL_SOURCES", "is_lexical", "TfidfSource", "fit_tfidf_source", "lexical_embeddings",
           "LexicalEmbeddings", "C_GRID"]

#: Reference names that are lexical sources rather than models.
LEXICAL_SOURCES = ("tfidf",)
#: SVM regularisation values tried by out-of-fold macro-F1 on train.
C_GRID = (0.1, 0.3, 1.0, 3.0)
POOLING = "tfidf"
_VECTORIZER = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}


def is_lexical(ref: str) -> bool:
    """True for a reference that names a lexical source (``tfidf``), not a model."""
    return ref in LEXICAL_SOURCES


def _vectorizer(vocabulary=None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    kw = dict(_VECTORIZER)
    if vocabulary is not None:
        kw.pop("min_df")
    return TfidfVectorizer(vocabulary=vocabulary, dtype=np.float32, **kw)


def _scores(svm, X, n_classes: int) -> np.ndarray:
    """Decision scores ``[N, C]`` (``[N, 1]`` for two classes) in the full class order; a class the
    SVM never saw (absent from a fold) gets the row's lowest score."""
    s = np.asarray(svm.decision_function(X), dtype=np.float32)
    if n_classes == 2:
        if len(svm.classes_) == 2:
            return s.reshape(-1, 1)
        return np.full((X.shape[0], 1), -1.0 if svm.classes_[0] == 0 else 1.0, dtype=np.float32)
    if s.ndim == 1:  # an SVM fitted on a two-class fold of a multi-class problem
        s = np.stack([-s, s], axis=1)
    out = np.repeat(s.min(axis=1, keepdims=True), n_classes, axis=1)
    out[:, np.asarray(svm.classes_, dtype=int)] = s
    return out


@dataclass
class TfidfSource:
    """A fitted ``tfidf`` source: vectoriser state and the all-train SVM, as plain arrays."""

    vocabulary: dict
    idf: np.ndarray
    coef: np.ndarray  # [C or 1, V]
    intercept: np.ndarray  # [C or 1]
    n_classes: int
    settings: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def width(self) -> int:
        return int(self.coef.shape[0])

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Decision scores ``[N, width]`` (float32) of the all-train SVM for raw texts."""
        vec = _vectorizer(self.vocabulary)
        vec.idf_ = self.idf
        X = vec.transform(list(texts))
        return np.asarray(X @ self.coef.T + self.intercept, dtype=np.float32)

    def save(self, directory) -> Path:
        """Write ``tfidf.json`` (vocabulary, settings) and ``tfidf.npz`` (idf, coef, intercept)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "tfidf.json").write_text(json.dumps({
            "format": "layerfuse.tfidf/1", "n_classes": self.n_classes, "settings": self.settings,
            "fingerprint": self.fingerprint, "vocabulary": self.vocabulary}), encoding="utf-8")
        np.savez(d / "tfidf.npz", idf=self.idf, coef=self.coef, intercept=self.intercept)
        return d

    @classmethod
    def load(cls, directory) -> "TfidfSource":
        """Read a folder written by :meth:`save`; a missing or damaged file raises one clear error."""
        d = Path(directory)
        try:
            meta = json.loads((d / "tfidf.json").read_text(encoding="utf-8"))
            with np.load(d / "tfidf.npz") as z:
                arrays = {k: z[k] for k in ("idf", "coef", "intercept")}
        except (OSError, ValueError, KeyError) as e:
            raise LayerfuseError(f"{d}: the tfidf source is missing or damaged ({e}); save the classifier again") from None
        if meta.get("format") != "layerfuse.tfidf/1":
            raise LayerfuseError(f"{d / 'tfidf.json'}: not a layerfuse tfidf source")
        return cls({str(k): int(v) for k, v in meta["vocabulary"].items()}, arrays["idf"], arrays["coef"],
                   arrays["intercept"], int(meta["n_classes"]), meta.get("settings", {}), meta.get("fingerprint", ""))


def fit_tfidf_source(texts: Sequence[str], y, n_classes: int, *, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
                     c_grid: Sequence[float] = C_GRID) -> tuple[TfidfSource, np.ndarray]:
    """Fit the source on training texts only.

    Returns the all-train source and the out-of-fold scores of the training texts ``[N, width]``
    for the ``C`` with the best out-of-fold macro-F1 (ties: the smaller ``C``).
    """
    from sklearn.metrics import f1_score
    from sklearn.svm import LinearSVC

    y = np.asarray(y, dtype=int)
    texts = list(texts)
    if len(texts) != len(y) or len(texts) < 2:
        raise LayerfuseError(f"tfidf needs one label per text and at least 2 texts, got {len(texts)} and {len(y)}")
    counts = np.bincount(y, minlength=n_classes)
    n_folds = int(max(2, min(folds, counts[counts > 0].max())))
    # The vectoriser is fitted per fold too: a text's out-of-fold scores must not use its n-grams' idf.
    fold_data = []
    for tr, va in stratified_folds(y, n_folds, seed):  # classes rarer than the fold count (R52): fewer folds
        vec = _vectorizer()
        fold_data.append((tr, va, vec.fit_transform([texts[i] for i in tr]), vec.transform([texts[i] for i in va])))
    best = None
    for c in c_grid:
        oof = np.zeros((len(y), 1 if n_classes == 2 else n_classes), dtype=np.float32)
        for tr, va, Xtr, Xva in fold_data:
            svm = LinearSVC(C=c, max_iter=10000, random_state=seed).fit(Xtr, y[tr])
            oof[va] = _scores(svm, Xva, n_classes)
        pred = (oof[:, 0] > 0).astype(int) if n_classes == 2 else oof.argmax(1)
        f1 = f1_score(y, pred, average="macro")
        if best is None or f1 > best[0] + 1e-12:
            best = (f1, c, oof)
    f1, c, oof = best
    vec = _vectorizer()
    X = vec.fit_transform(texts)
    svm = LinearSVC(C=c, max_iter=10000, random_state=seed).fit(X, y)
    if n_classes == 2:
        coef, intercept = svm.coef_.astype(np.float32), svm.intercept_.astype(np.float32)
    else:
        coef = np.zeros((n_classes, X.shape[1]), dtype=np.float32)
        intercept = np.full(n_classes, -1e3, dtype=np.float32)  # a class absent from train never wins
        coef[svm.classes_] = svm.coef_
        intercept[svm.classes_] = svm.intercept_
    settings = {"vectorizer": {k: list(v) if isinstance(v, tuple) else v for k, v in _VECTORIZER.items()},
                "classifier": "LinearSVC", "C": c, "C_grid": list(c_grid), "folds": n_folds, "seed": seed,
                "oof_macro_f1": float(f1), "vocabulary_size": int(X.shape[1])}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(coef.tobytes())
    h.update(vec.idf_.astype(np.float32).tobytes())
    source = TfidfSource({k: int(v) for k, v in vec.vocabulary_.items()}, vec.idf_.astype(np.float32), coef,
                         intercept, n_classes, settings, h.hexdigest()[:16])
    return source, oof


@dataclass
class LexicalEmbeddings:
    """The scores of a lexical source shaped like :class:`layerfuse.embed.Embeddings`: one
    "layer" (``array(split)`` is ``[1, N, width]``), pooling ``tfidf``."""

    model: str
    source: TfidfSource
    classes: list[str]
    labels: dict
    arrays: dict
    keys: dict
    stats: dict

    fingerprint = property(lambda self: self.source.fingerprint)
    n_layers = property(lambda self: 0)
    depth = property(lambda self: 0)
    width = property(lambda self: self.source.width)
    poolings = property(lambda self: [POOLING])
    splits = property(lambda self: list(self.labels))
    layers = property(lambda self: [0])

    def array(self, split: str = "train", pooling: str | None = None) -> np.ndarray:
        if (split, pooling or POOLING) not in self.arrays:
            raise LayerfuseError(f"no {self.model} scores for split '{split}' with pooling '{pooling}': "
                                 f"have splits {self.splits} and pooling {POOLING}")
        return self.arrays[(split, pooling or POOLING)]

    def get(self, split: str = "train", layer: int = -1, pooling: str | None = None) -> np.ndarray:
        return self.array(split, pooling)[0]


def lexical_embeddings(ref: str, ds, extraction: dict | None = None, folds: int = DEFAULT_FOLDS) -> LexicalEmbeddings:
    """Fit ``ref`` (``tfidf``) on ``ds``'s train split and score every split: out-of-fold on train,
    the all-train SVM elsewhere. ``extraction`` (the models' settings) is kept in ``stats`` so a
    classifier whose first source is lexical still records how its models were run."""
    import time

    if not is_lexical(ref):
        raise LayerfuseError(f"'{ref}' is not a lexical source: choose from {', '.join(LEXICAL_SOURCES)}")
    t0 = time.perf_counter()
    train = ds.splits["train"]
    source, oof = fit_tfidf_source(train.texts, train.labels, len(ds.classes), folds=folds)
    arrays, keys, labels = {}, {}, {}
    for name, sp in ds.splits.items():
        a = oof if name == "train" else source.transform(sp.texts)
        arrays[(name, POOLING)] = a[None]
        labels[name] = sp.labels
        keys[name] = f"{ref}-{source.fingerprint}-{ds.text_fingerprint(name)}"
    ex = dict(extraction or {})
    dtype = ex.get("dtype") if ex.get("dtype") in ("float32", "bfloat16", "float16") else "float32"
    stats = {"model": ref, "dataset": ds.name, "extract_seconds": time.perf_counter() - t0, "lexical": True,
             "max_length": ex.get("max_length", DEFAULT_MAX_LENGTH), "dtype": dtype,
             "storage": ex.get("storage", "float32"), "batch_tokens": ex.get("batch_tokens", DEFAULT_BATCH_TOKENS),
             "peak_rss_mb": 0.0, "tokens_per_second": None, "truncated": 0, "cache_bytes": 0}
    return LexicalEmbeddings(ref, source, list(ds.classes), labels, arrays, keys, stats)
