"""A scikit-learn estimator over raw texts: ``LayerFusionClassifier``.

``__init__`` only stores parameters; ``fit`` extracts every layer of each model on the training
texts, scores layers by cross-validation on those texts, selects layers, and trains the fusion
head with early stopping on a validation split carved from them. Learned state ends in ``_``. It
clones, and works inside ``cross_val_score``, ``GridSearchCV`` and ``Pipeline``.

Caching is opt-in, as with scikit-learn's ``memory=``: with ``cache_dir=None`` (the default)
embeddings and layer profiles live in a temporary folder removed when ``fit`` returns; with a
``cache_dir`` they are kept there, so refitting on the same texts (a hyper-parameter search over
the head, ``cross_val_score`` again) extracts and scores nothing twice. Dequantised copies of GGUF
models are the model itself, not a result, and always go to the user's cache root.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from layerfuse.cache.layout import MODEL_PARTS, cache_root
from layerfuse.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TOKENS,
    DEFAULT_DEVICE,
    DEFAULT_COMPILE,
    DEFAULT_DTYPE,
    DEFAULT_FOLDS,
    DEFAULT_FUSION,
    DEFAULT_HEAD,
    DEFAULT_LABEL_COLUMN,
    DEFAULT_LR,
    DEFAULT_MAX_EPOCHS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MODELS,
    DEFAULT_PATIENCE,
    DEFAULT_POOLINGS,
    DEFAULT_PRECISION,
    DEFAULT_PROJ_DIM,
    DEFAULT_SEED,
    DEFAULT_SELECT,
    DEFAULT_TEXT_COLUMN,
    DEFAULT_TOPK,
    DEFAULT_VAL_FRACTION,
    DEFAULT_WINDOW_SHORTLIST,
    DEFAULT_WINDOWS,
)
from layerfuse.errors import LayerfuseError
from layerfuse.validation import check_texts, encode_labels


@contextmanager
def fit_cache(cache_dir):
    """The cache root a ``fit`` works in: ``cache_dir`` itself, or (None) a temporary folder that
    links to the user cache's :data:`~layerfuse.cache.layout.MODEL_PARTS` (model copies, installed
    models, the kept dtype measurement: the models and this machine, not results), so a fit neither
    rebuilds them nor measures the CPU again."""
    if cache_dir is not None:
        yield cache_dir
        return
    shared = cache_root(None)
    with tempfile.TemporaryDirectory(prefix="layerfuse-fit-") as tmp:
        for name in MODEL_PARTS:
            (shared / name).mkdir(parents=True, exist_ok=True)
            os.symlink(shared / name, Path(tmp) / name)
        yield tmp


class LayerFusionClassifier(ClassifierMixin, BaseEstimator):
    """Frozen language models → best layers → fusion → trained head, as one estimator.

    Parameters
    ----------
    models : str or list of str, default "smollm2-135m"
        Model references (packaged alias, local Hugging Face folder, ``.gguf`` file or hub id), a
        list or a comma-separated string.
    layers : str, default "auto"
        Layer selection strategy per model: ``auto``, ``best``, ``top-k`` (or ``top-3``),
        ``window`` or ``all``; chosen by CV on the training texts.
    fusion : str, default "concat"
        Fusion strategy (see ``layerfuse.model.FUSIONS``), used when there are several sources.
    head : {"mlp", "logreg"}, default "mlp"
        The paper's MLP head or logistic regression.
    pooling : str, default "mean,last"
        Poolings to consider; the best by CV on the training texts is used.
    k : int, default 3
        k for ``top-k``.
    folds : int, default 5
        Cross-validation folds for the layer scores.
    windows : int, default 4
        Widest averaged window of layers scored.
    window_shortlist : int, default 12
        Averaged windows scored: the ``window_shortlist`` whose layers have the best mean CV probe
        accuracy (0: every window).
    proj_dim : int, default 1024
        Projection size of each source before fusion.
    max_length : int, default 512
        Texts are truncated to this many tokens.
    dtype : {"auto", "float32", "bfloat16"}, default "auto"
        Compute dtype of the backbones.
    batch_tokens : int or "auto", default 1024
        Padded tokens per forward-pass batch; ``"auto"`` takes the budget for the compute dtype
        (``layerfuse.config.BATCH_TOKENS_BY_DTYPE``).
    max_epochs : int, default 50
        Most epochs of head training.
    patience : int, default 5
        Early-stopping patience, on the validation split.
    val_fraction : float, default 0.1
        Share of the training texts carved out (stratified) for early stopping.
    lr : float, default 1e-3
        Learning rate of the head.
    batch_size : int, default 64
        Mini-batch size of head training.
    precision : {"auto", "float32", "bfloat16"}, default "auto"
        How the head's training steps compute: float32, bfloat16 autocast (1.1-1.5x faster on a CPU
        with bf16 instructions, scores within the seeds' spread of float32's), or ``"auto"``:
        bfloat16 where this CPU runs bf16 matrix products fast (the decision ``dtype="auto"`` makes),
        as ``layerfuse run`` does.
    seed : int, default 0
        Seed of the validation carve and of the head's initialisation.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where the backbones run.
    compile : {"auto", "on", "off"}, default "auto"
        Run the transformer blocks through ``torch.compile`` while extracting ``fit``'s texts
        (auto: on a CPU with a C++ compiler, for enough texts to repay compiling;
        :mod:`layerfuse.embed.compiled`). Prediction runs eager.
    cache_dir : str or path-like, default None
        Keep embeddings and layer profiles under this cache root (opt-in caching). None: a
        temporary folder per ``fit``.
    progress : bool, default False
        Show progress bars.
    text_column, label_column : str, default "text", "label"
        Column names used when ``X`` is a pandas DataFrame, a ``datasets.Dataset``/``DatasetDict``
        (its ``train`` split) or a ``save_to_disk`` folder; ``fit(X)`` then takes the labels from
        ``label_column`` unless ``y`` is given.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    pipeline_ : layerfuse.pipeline.FusionPipeline
        The fitted backbones → layers → fusion → head chain; ``save`` writes it as a folder.
    selections_ : list of layerfuse.scoring.LayerSelection
        The layers chosen for each model, with the reason.
    """

    def __init__(self, models=DEFAULT_MODELS[0], layers=DEFAULT_SELECT, fusion=DEFAULT_FUSION, head=DEFAULT_HEAD,
                 pooling=",".join(DEFAULT_POOLINGS), k=DEFAULT_TOPK, folds=DEFAULT_FOLDS, windows=DEFAULT_WINDOWS,
                 window_shortlist=DEFAULT_WINDOW_SHORTLIST, proj_dim=DEFAULT_PROJ_DIM, max_length=DEFAULT_MAX_LENGTH, dtype=DEFAULT_DTYPE,
                 batch_tokens=DEFAULT_BATCH_TOKENS, max_epochs=DEFAULT_MAX_EPOCHS, patience=DEFAULT_PATIENCE,
                 val_fraction=DEFAULT_VAL_FRACTION, lr=DEFAULT_LR, batch_size=DEFAULT_BATCH_SIZE, precision=DEFAULT_PRECISION,
                 seed=DEFAULT_SEED,
                 device=DEFAULT_DEVICE, compile=DEFAULT_COMPILE,
                 cache_dir=None, progress=False, text_column=DEFAULT_TEXT_COLUMN, label_column=DEFAULT_LABEL_COLUMN):
        self.models = models
        self.layers = layers
        self.fusion = fusion
        self.head = head
        self.pooling = pooling
        self.k = k
        self.folds = folds
        self.windows = windows
        self.window_shortlist = window_shortlist
        self.proj_dim = proj_dim
        self.max_length = max_length
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.lr = lr
        self.batch_size = batch_size
        self.precision = precision
        self.seed = seed
        self.device = device
        self.compile = compile
        self.cache_dir = cache_dir
        self.progress = progress
        self.text_column = text_column
        self.label_column = label_column

    def _texts(self, X, y=None, *, fit: bool = False):
        """Texts of ``X`` (a list, or a table: see ``text_column``) and, in ``fit`` without ``y``,
        the labels from ``label_column``."""
        from layerfuse.data.frames import is_table_like, table_texts, table_texts_labels

        if not is_table_like(X):
            return check_texts(X), y
        if fit:  # a DatasetDict gives its train split
            texts, labels = table_texts_labels(X, self.text_column, self.label_column if y is None else None)
            return texts, (labels if y is None else y)
        return table_texts(X, self.text_column), y

    def fit(self, X, y=None):
        from layerfuse.cache.layout import profile_checkpoint_dir
        from layerfuse.data.dataset import Dataset, Split
        from layerfuse.embed.pooling import parse_poolings
        from layerfuse.model.lexical import is_lexical
        from layerfuse.model.training import fit_head
        from layerfuse.pipeline import FusionPipeline
        from layerfuse.run.grid import extraction_settings, resolve_precision
        from layerfuse.run.prepare import prepare_models
        from layerfuse.validation import parse_list

        texts, y = self._texts(X, y, fit=True)
        if y is None:
            raise LayerfuseError("y is missing: pass one label per text (or X as a table with a label column)")
        self.classes_, y_idx = encode_labels(y, len(texts), "y")
        if len(self.classes_) < 2:
            raise LayerfuseError(f"y has a single class ({self.classes_[0]!r}): a classifier needs at least two")
        models = parse_list(self.models, "models")
        ds = Dataset("fit", [str(c) for c in self.classes_], {"train": Split(texts, y_idx.astype(np.int64))},
                     source="LayerFusionClassifier.fit")
        extraction = {"max_length": self.max_length, "dtype": self.dtype, "batch_tokens": self.batch_tokens,
                      "device": self.device, "compile": self.compile}
        with fit_cache(self.cache_dir) as root:
            preps = prepare_models(ds, models, poolings=parse_poolings(self.pooling), layers=self.layers, k=self.k,
                                   folds=self.folds, windows=self.windows, window_shortlist=self.window_shortlist,
                                   extraction=extraction, cache_dir=root,
                                   profile_dir=profile_checkpoint_dir(root), progress=self.progress,
                                   log=lambda *_: None)
            # Sources may be views of memory-mapped cache files: copy those (only) before a temporary
            # cache goes away.
            sources = [a if a.flags.owndata else np.array(a) for p in preps for a in p.sources("train")]
            settings = extraction_settings(next((p.emb for p in preps if not is_lexical(p.ref)), preps[0].emb))
            lexical = {p.ref: p.emb.source for p in preps if is_lexical(p.ref)}
            precision = resolve_precision(self.precision, root, log=lambda *_: None)
        trained = fit_head(sources, y_idx, n_classes=len(self.classes_), fusion=self.fusion, head=self.head,
                           proj_dim=self.proj_dim, val_fraction=self.val_fraction, seed=self.seed, lr=self.lr,
                           batch_size=self.batch_size, max_epochs=self.max_epochs, patience=self.patience,
                           precision=precision, progress=self.progress)
        self.pipeline_ = FusionPipeline(
            specs=[p.spec for p in preps], trained=trained, classes=[str(c) for c in self.classes_],
            extraction=settings,
            lexical=lexical,
            metrics={"val_acc": trained.val_acc, "val_f1": trained.val_f1},
            info={"selections": [p.selection.to_dict() for p in preps]},
        )
        self.selections_ = [p.selection for p in preps]
        return self

    def _pipeline(self):
        if not hasattr(self, "pipeline_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this LayerFusionClassifier is not fitted yet: call fit(texts, labels) first")
        return self.pipeline_

    def predict_proba(self, X) -> np.ndarray:
        from layerfuse.embed.device import resolve_device

        return self._pipeline().predict_proba(self._texts(X)[0], device=resolve_device(self.device),
                                              cache_dir=self.cache_dir)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # raises NotFittedError before classes_ is read
        return self.classes_[proba.argmax(1)]

    def save(self, directory) -> None:
        """Write the fitted classifier as a folder that ``layerfuse.load`` and ``layerfuse predict`` read."""
        self._pipeline().save(directory)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags
