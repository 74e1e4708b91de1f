"""Embeddings as Parquet, for use in other tools (pandas, polars, DuckDB, Spark, Arrow).

Layout of ``export_parquet(emb, DIR, dataset)`` (``layerfuse extract --export DIR``)::

    DIR/train.parquet        one file per split (train, validation, test: whichever the dataset has)
    DIR/test.parquet
    DIR/manifest.json        model, fingerprint, layers, poolings, width, classes, rows per split,
                             the column names and this layout's version

Each file has one row per text, in the dataset's order, with the columns

``text`` (string), ``label`` (string: the class name), ``label_id`` (int64: index into the
manifest's ``classes``), then one column per layer and pooling, named ``layer_{L:02d}_{pooling}``
(``layer_00_mean`` is the token embeddings, ``layer_12_last`` block 12), each a fixed-size list
of ``width`` float32 values.

Vectors are float32 whatever the cache stores (float16 Parquet columns are not read everywhere).
Files are written in row groups of at most ``row_group`` texts, so memory stays bounded; each file
is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from layerfuse.errors import LayerfuseError

__all__ = ["LAYOUT", "column_name", "export_parquet"]

LAYOUT = "layerfuse-embeddings-parquet/1"


def column_name(layer: int, pooling: str) -> str:
    """The Parquet column holding ``layer`` pooled with ``pooling``: ``layer_03_mean``."""
    return f"layer_{int(layer):02d}_{pooling}"


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LayerfuseError("exporting Parquet needs pyarrow, which is not installed: pip install pyarrow "
                             "(or pip install 'layerfuse[parquet]')") from None
    return pa, pq


def _write_split(path: Path, texts, labels, classes, emb, split: str, row_group: int) -> int:
    pa, pq = _arrow()
    layers = emb.layers
    fields = [pa.field("text", pa.string()), pa.field("label", pa.string()), pa.field("label_id", pa.int64())]
    fields += [pa.field(column_name(k, p), pa.list_(pa.float32(), emb.width)) for p in emb.poolings for k in layers]
    schema = pa.schema(fields, metadata={"layerfuse": json.dumps({"layout": LAYOUT, "model": emb.model,
                                                                  "fingerprint": emb.fingerprint, "split": split})})
    tmp = path.with_name(path.name + ".tmp")
    n = len(texts)
    arrays = {p: emb.array(split, p) for p in emb.poolings}
    with pq.ParquetWriter(tmp, schema) as w:
        for a in range(0, max(n, 1), row_group):
            b = min(n, a + row_group)
            cols = [pa.array(texts[a:b], pa.string()),
                    pa.array([classes[int(i)] for i in labels[a:b]], pa.string()),
                    pa.array(np.asarray(labels[a:b], dtype=np.int64))]
            for p in emb.poolings:
                for k in layers:
                    block = np.ascontiguousarray(arrays[p][k, a:b], dtype=np.float32)
                    cols.append(pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), emb.width))
            w.write_table(pa.Table.from_arrays(cols, schema=schema))
            if n == 0:
                break
    os.replace(tmp, path)
    return n


def export_parquet(emb, directory: str | os.PathLike, dataset, *, row_group: int = 1024) -> dict:
    """Write ``emb`` (a :class:`layerfuse.embed.extract.Embeddings`) as Parquet files under ``directory``.

    Parameters
    ----------
    emb : Embeddings
        What :func:`layerfuse.extract` returned.
    directory : path
        Output folder, created if needed; files of the same names are replaced.
    dataset : layerfuse.data.Dataset
        The dataset ``emb`` was extracted from (for the texts).
    row_group : int
        Most texts per Parquet row group.

    Returns
    -------
    dict
        The manifest written to ``directory/manifest.json`` (files, rows, columns).
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise LayerfuseError(f"{out} exists and is not a folder: pass a folder for the export")
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in emb.splits:
        texts = dataset.splits[split].texts
        labels = emb.labels[split]
        if len(texts) != len(labels):
            raise LayerfuseError(f"split '{split}': {len(texts)} texts but {len(labels)} embeddings; "
                                 "pass the dataset the embeddings were extracted from")
        path = out / f"{split}.parquet"
        files[split] = {"file": path.name, "rows": _write_split(path, texts, labels, emb.classes, emb, split,
                                                                 row_group)}
    manifest = {
        "layout": LAYOUT,
        "model": emb.model,
        "fingerprint": emb.fingerprint,
        "n_layers": emb.n_layers,
        "layers": emb.layers,
        "poolings": list(emb.poolings),
        "width": emb.width,
        "dtype": "float32",
        "classes": list(emb.classes),
        "dataset": dataset.name,
        "splits": files,
        "columns": ["text", "label", "label_id"] + [column_name(k, p) for p in emb.poolings for k in emb.layers],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
