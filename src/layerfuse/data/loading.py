"""One entry point for data: a built-in name or the user's files (:func:`load_dataset`), and the
``data`` section of a run configuration (:func:`load_data`).
"""

from __future__ import annotations

import inspect

from layerfuse.data.builtin import BUILTIN_NAMES, load_builtin
from layerfuse.data.dataset import Dataset
from layerfuse.data.files import load_files
from layerfuse.data.frames import is_table_like, load_frames
from layerfuse.errors import LayerfuseError

__all__ = ["load_dataset", "load_data"]

_FILE_DEFAULTS = {
    k: p.default for k, p in inspect.signature(load_files).parameters.items() if p.kind is p.KEYWORD_ONLY
}


def load_dataset(name: str | None = None, *, train=None, test=None, **kw) -> Dataset:
    """A built-in dataset by ``name``, or the user's ``train`` (and optional ``test``) data.

    ``train``/``test`` are files, or a pandas DataFrame, a ``datasets.Dataset``/``DatasetDict``
    or a folder saved with ``save_to_disk`` (see :mod:`layerfuse.data.frames`).
    Exactly one of ``name`` and ``train`` must be given. ``kw`` goes to :func:`load_files`;
    with a built-in name, options left at their defaults (or None) are ignored.
    """
    unknown = sorted(set(kw) - set(_FILE_DEFAULTS))
    if unknown:
        raise TypeError(f"load_dataset() got unexpected keyword argument(s): {', '.join(unknown)}")
    if name is not None and train is not None:
        raise LayerfuseError(f"give either a built-in dataset name ('{name}') or `train` files, not both")
    if name is None and train is None:
        raise LayerfuseError(f"no dataset given: name a built-in one ({', '.join(BUILTIN_NAMES)}) "
                             f"or pass `train` FILE [`test` FILE]")
    if name is not None:
        if test is not None:
            raise LayerfuseError(f"a `test` file needs a `train` file; the built-in dataset '{name}' has its own test split")
        extra = [k for k, v in kw.items() if v is not None and v != _FILE_DEFAULTS[k]]
        if extra:
            opts = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise LayerfuseError(f"{opts} only apply to `train` files, not to the built-in dataset '{name}'; "
                                 f"drop them or load your own files")
        return load_builtin(name)
    kw = {k: v for k, v in kw.items() if v is not None}
    if is_table_like(train) or is_table_like(test):
        return load_frames(train, test, **kw)
    return load_files(train, test, **kw)


def load_data(data_cfg: dict):

    d = dict(data_cfg)
    limit = d.pop("limit", None)
    name = d.pop("dataset", None)
    has_train = d.get("train") is not None and not (isinstance(d["train"], str) and not d["train"])
    if name and has_train:
        raise LayerfuseError("give either data.dataset or data.train, not both")
    if name:
        ds = load_dataset(name)
    elif has_train:  # a file or folder path, a DataFrame, a datasets.Dataset or DatasetDict
        ds = load_dataset(train=d.pop("train"), test=d.pop("test", None), **d)
    else:
        raise LayerfuseError("no data: pass `dataset` NAME or `train` FILE (data.dataset or data.train in a config)")
    if limit is not None:  # 0 is refused, not read as "no limit"
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise LayerfuseError(f"`limit` must be a whole number of texts >= 1 per split, got {limit!r}")
        ds = ds.subsample(limit)
    return ds
