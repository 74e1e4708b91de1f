"""A scikit-learn estimator over raw texts: ``LayerFusionClassifier``.

``__init__`` only stores parameters; ``fit`` extracts every layer of each model on the training
texts (through the cache), scores layers by cross-validation on those texts (profiles kept in the
cache too, so refitting on the same texts, e.g. in a hyper-parameter search, scores them once), selects layers,
and trains the fusion head with early stopping on a validation split carved from them. Learned
state ends in ``_``. It clones, and works inside ``cross_val_score`` and ``Pipeline``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from layerfuse.errors import LayerfuseError
from layerfuse.validation import check_texts


class LayerFusionClassifier(ClassifierMixin, BaseEstimator):
    """Frozen language models → best layers → fusion → trained head, as one estimator.

    Parameters
    ----------
    models : model references (alias, folder, .gguf, hub id), a list or a comma-separated string.
    layers : layer selection: ``auto``, ``best``, ``top-k``/``top-3``, ``window``, ``all``.
    fusion : fusion strategy (see ``layerfuse.fusion.FUSIONS``), used when there are several sources.
    head : ``mlp`` (the paper's head) or ``logreg``.
    pooling : poolings to consider; the best by CV on the training texts is used.
    """

    def __init__(self, models="smollm2-135m", layers="auto", fusion="concat", head="mlp", pooling="mean,last",
                 k=3, folds=5, windows=4, proj_dim=1024, max_length=512, dtype="auto", batch_tokens=1024,
                 max_epochs=50, patience=5, val_fraction=0.1, lr=1e-3, batch_size=64, seed=0, device="auto",
                 cache_dir=None, progress=False):
        self.models = models
        self.layers = layers
        self.fusion = fusion
        self.head = head
        self.pooling = pooling
        self.k = k
        self.folds = folds
        self.windows = windows
        self.proj_dim = proj_dim
        self.max_length = max_length
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.cache_dir = cache_dir
        self.progress = progress

    def fit(self, X, y):
        from layerfuse.cache.layout import profile_checkpoint_dir
        from layerfuse.data.dataset import Dataset, Split
        from layerfuse.embed.pooling import parse_poolings
        from layerfuse.model.lexical import is_lexical
        from layerfuse.model.training import fit_head
        from layerfuse.pipeline import FusionPipeline
        from layerfuse.run.grid import extraction_settings
        from layerfuse.run.prepare import prepare_models
        from layerfuse.validation import parse_list

        texts = check_texts(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(texts):
            raise LayerfuseError(f"y must be one label per text: got {y.shape} labels for {len(texts)} texts")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise LayerfuseError(f"y has a single class ({self.classes_[0]!r}): a classifier needs at least two")
        models = parse_list(self.models, "models")
        ds = Dataset("fit", [str(c) for c in self.classes_], {"train": Split(texts, y_idx.astype(np.int64))},
                     source="LayerFusionClassifier.fit")
        extraction = {"max_length": self.max_length, "dtype": self.dtype, "batch_tokens": self.batch_tokens,
                      "device": self.device}
        preps = prepare_models(ds, models, poolings=parse_poolings(self.pooling), layers=self.layers, k=self.k,
                               folds=self.folds, windows=self.windows, extraction=extraction,
                               cache_dir=self.cache_dir, profile_dir=profile_checkpoint_dir(self.cache_dir),
                               progress=self.progress, log=lambda *_: None)
        sources = [a for p in preps for a in p.sources("train")]
        trained = fit_head(sources, y_idx, n_classes=len(self.classes_), fusion=self.fusion, head=self.head,
                           proj_dim=self.proj_dim, val_fraction=self.val_fraction, seed=self.seed, lr=self.lr,
                           batch_size=self.batch_size, max_epochs=self.max_epochs, patience=self.patience,
                           progress=self.progress)
        self.pipeline_ = FusionPipeline(
            specs=[p.spec for p in preps], trained=trained, classes=[str(c) for c in self.classes_],
            extraction=extraction_settings(next((p.emb for p in preps if not is_lexical(p.ref)), preps[0].emb)),
            lexical={p.ref: p.emb.source for p in preps if is_lexical(p.ref)},
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

        return self._pipeline().predict_proba(check_texts(X), device=resolve_device(self.device),
                                              cache_dir=self.cache_dir)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def save(self, directory) -> None:
        """Write the fitted classifier as a folder that ``layerfuse.load`` and ``layerfuse predict`` read."""
        self._pipeline().save(directory)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags
