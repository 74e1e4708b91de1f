"""``layerfuse predict``: label texts from a file or standard input with a saved classifier.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from layerfuse.errors import LayerfuseError

__all__ = ["cmd_predict"]


def _read_inputs(path: str, text_column: str, encoding: str) -> list[str]:

    if path == "-":
        texts = [line.rstrip("\n") for line in sys.stdin]
        where = "standard input"
    else:
        p = Path(path)
        if p.suffix.lower() in {".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"}:
            from layerfuse.data.files import read_texts

            return read_texts(p, text_column=text_column, encoding=encoding)
        if not p.exists():
            raise LayerfuseError(f"input file {p} does not exist")
        try:
            texts = p.read_text(encoding=encoding).splitlines()
        except UnicodeDecodeError as e:
            raise LayerfuseError(f"{p}: bytes that are not {encoding} at offset {e.start}: pass --encoding "
                                 "(e.g. --encoding latin-1)") from e
        where = str(p)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise LayerfuseError(f"no texts in {where}: give one text per line")
    return texts


def cmd_predict(args) -> int:
    from layerfuse.embed.device import resolve_device
    from layerfuse.pipeline import load

    pipe = load(args.classifier)
    texts = _read_inputs(args.input, args.text_column, args.encoding)
    proba = pipe.predict_proba(texts, device=resolve_device(args.device), cache_dir=args.cache_dir)
    labels = [pipe.classes[i] for i in proba.argmax(1)]
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        if args.json:
            for t, lab, pr in zip(texts, labels, proba):
                out.write(json.dumps({"text": t, "label": lab,
                                      "proba": {c: round(float(v), 6) for c, v in zip(pipe.classes, pr)}}) + "\n")
        else:
            out.write("\t".join(["label", *[f"p_{c}" for c in pipe.classes], "text"]) + "\n")
            for t, lab, pr in zip(texts, labels, proba):
                out.write("\t".join([lab, *[f"{v:.4f}" for v in pr], t.replace("\t", " ")]) + "\n")
    finally:
        if args.output:
            out.close()
    return 0
