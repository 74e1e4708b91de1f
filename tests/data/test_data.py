"""Tests for layerfuse.data: built-in datasets, fingerprints, subsampling and user files."""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
import pytest

from layerfuse.data import builtin as D
from layerfuse.data.builtin import list_builtin, load_builtin
from layerfuse.data.dataset import Dataset, Split
from layerfuse.data.files import load_files, read_texts
from layerfuse.data.loading import load_dataset
from layerfuse.errors import LayerfuseError

R8_COUNTS = {
    "train": {"earn": 2840, "acq": 1596, "crude": 253, "trade": 251, "money-fx": 206, "interest": 190, "ship": 108,
              "grain": 41},
    "test": {"earn": 1083, "acq": 696, "crude": 121, "money-fx": 87, "interest": 81, "trade": 75, "ship": 36,
             "grain": 10},
}


def counts(ds: Dataset, split: str) -> dict[str, int]:
    return dict(Counter(ds.label_names(split)))


def write(path, content: str | bytes):
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def err(fn, *args, **kw) -> str:
    with pytest.raises(LayerfuseError) as ei:
        fn(*args, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def toy(n_per_class=(30, 20, 10), name="toy") -> Dataset:
    texts, labels = [], []
    for i in range(sum(n_per_class)):
        # interleave classes so that order matters
        c = i % len(n_per_class)
        while sum(1 for x in labels if x == c) >= n_per_class[c]:
            c = (c + 1) % len(n_per_class)
        texts.append(f"text number {i}")
        labels.append(c)
    tr = Split(texts, labels)
    te = Split([f"test {i}" for i in range(12)], [i % len(n_per_class) for i in range(12)])
    return Dataset(name, [f"c{i}" for i in range(len(n_per_class))], {"test": te, "train": tr}, "made up")


# ---------------------------------------------------------------------------------------------
# Built-in datasets


def test_list_builtin_reads_index_only():
    D._read_builtin.cache_clear()
    info = list_builtin()
    assert D._read_builtin.cache_info().currsize == 0
    assert [e["name"] for e in info] == ["sst2", "mr", "r8", "r52"]
    by = {e["name"]: e for e in info}
    assert by["sst2"]["splits"] == {"train": 6920, "validation": 872, "test": 1821}
    assert by["r52"]["n_classes"] == 52
    assert all(e["description"] and e["source"] and e["sources"] for e in info)
    assert all(len(s["sha256"]) == 64 for e in info for s in e["sources"])
    info[0]["splits"]["train"] = -1  # callers get copies
    assert list_builtin()[0]["splits"]["train"] == 6920


def test_sst2():
    ds = load_builtin("sst2")
    assert ds.classes == ["negative", "positive"]
    assert list(ds.splits) == ["train", "validation", "test"]
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 6920, "validation": 872, "test": 1821}
    assert counts(ds, "train") == {"positive": 3610, "negative": 3310}
    assert counts(ds, "validation") == {"positive": 444, "negative": 428}
    assert counts(ds, "test") == {"positive": 909, "negative": 912}
    assert ds.splits["train"].texts[0].startswith("a stirring , funny and finally transporting")
    assert ds.label_names("train")[:2] == ["positive", "negative"]


def test_mr():
    ds = load_builtin("mr")
    assert ds.classes == ["negative", "positive"]
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 7108, "test": 3554}
    assert counts(ds, "train") == {"positive": 3554, "negative": 3554}
    assert counts(ds, "test") == {"positive": 1777, "negative": 1777}
    # source bytes 0x85/0x97 are cp1252 punctuation, not C1 control characters
    joined = "".join(ds.splits["train"].texts)
    assert "—" in joined and "…" in joined and "é" in joined
    assert not any("\x80" <= ch <= "\x9f" for ch in joined)


def test_r8():
    ds = load_builtin("r8")
    assert ds.classes == sorted(R8_COUNTS["train"])
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 5485, "test": 2189}
    assert counts(ds, "train") == R8_COUNTS["train"]
    assert counts(ds, "test") == R8_COUNTS["test"]


def test_r52():
    ds = load_builtin("r52")
    assert len(ds.classes) == 52 and ds.classes == sorted(ds.classes)
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 6532, "test": 2568}
    tr, te = counts(ds, "train"), counts(ds, "test")
    assert set(tr) == set(te) == set(ds.classes)
    assert (tr["earn"], te["earn"], tr["acq"], te["acq"], tr["platinum"], te["platinum"]) == (2840, 1083, 1596, 696, 1, 2)


@pytest.mark.parametrize("name", D.BUILTIN_NAMES)
def test_builtin_matches_index(name):
    ds = load_builtin(name)
    entry = {e["name"]: e for e in list_builtin()}[name]
    assert ds.fingerprint() == entry["fingerprint"]
    assert ds.classes == entry["classes"]
    assert ds.summary()["class_counts"] == entry["class_counts"]
    for sp in ds.splits.values():
        assert sp.labels.dtype == np.int64
        assert all(t and t == t.strip() and "\n" not in t for t in sp.texts)
    assert ds.source == entry["source"] and "\n" not in ds.source


@pytest.mark.parametrize("alias", ["SST-2", "sst_2", " Sst2 ", "SST2"])
def test_builtin_aliases(alias):
    ds = load_builtin(alias)
    assert ds.name == "sst2"
    assert load_dataset(alias).name == "sst2"


def test_builtin_returns_independent_copies():
    a = load_builtin("mr")
    a.splits["train"].texts[0] = "changed"
    assert load_builtin("mr").splits["train"].texts[0] != "changed"


def test_unknown_builtin():
    msg = err(load_builtin, "imdb")
    assert "imdb" in msg and all(n in msg for n in D.BUILTIN_NAMES)
    assert "`train`" in err(load_builtin, "reviews.csv")


# ---------------------------------------------------------------------------------------------
# Fingerprints


def test_fingerprint_stable_and_known():
    ds = load_builtin("sst2")
    assert ds.fingerprint() == "d310909b9b89c053"  # regression: changes only if the data or hashing changes
    fp = ds.fingerprint("train")
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == load_builtin("sst2").fingerprint("train")
    assert toy().fingerprint() == toy().fingerprint()
    assert toy().text_fingerprint("train") == toy().text_fingerprint("train")


def test_fingerprint_sensitivity():
    base = toy()
    fps = (base.fingerprint(), base.fingerprint("train"), base.fingerprint("test"), base.text_fingerprint("train"))

    changed = toy()
    texts = list(changed.splits["train"].texts)
    texts[5] += "!"
    changed.splits["train"] = Split(texts, changed.splits["train"].labels)
    assert changed.fingerprint() != fps[0]
    assert changed.fingerprint("train") != fps[1]
    assert changed.fingerprint("test") == fps[2]
    assert changed.text_fingerprint("train") != fps[3]

    relabeled = toy()
    y = relabeled.splits["train"].labels.copy()
    y[0] = (y[0] + 1) % 3
    relabeled.splits["train"] = Split(relabeled.splits["train"].texts, y)
    assert relabeled.fingerprint("train") != fps[1]
    assert relabeled.text_fingerprint("train") == fps[3]

    renamed = toy()
    renamed.classes = ["a", "b", "c"]
    assert renamed.fingerprint() != fps[0] and renamed.text_fingerprint("train") == fps[3]

    swapped = toy()
    t = list(swapped.splits["train"].texts)
    t[0], t[1] = t[1], t[0]
    swapped.splits["train"] = Split(t, swapped.splits["train"].labels)
    assert swapped.text_fingerprint("train") != fps[3]

    # no ambiguity from concatenation
    a = Dataset("x", ["p", "q"], {"train": Split(["ab", "c"], [0, 1])}, "")
    b = Dataset("x", ["p", "q"], {"train": Split(["a", "bc"], [0, 1])}, "")
    assert a.text_fingerprint("train") != b.text_fingerprint("train")


def test_missing_split_is_clear():
    msg = err(toy().text_fingerprint, "validation")
    assert "validation" in msg and "train" in msg


def test_split_and_dataset_validation():
    sp = Split(["a", "b"], [0, 1])
    assert sp.labels.dtype == np.int64 and not sp.labels.flags.writeable
    assert sp == Split(["a", "b"], np.array([0, 1], dtype=np.int32))
    with pytest.raises(ValueError):
        Split(["a"], [0, 1])
    with pytest.raises(TypeError):
        Split(["a", "b"], [0.5, 1.0])
    with pytest.raises(ValueError):
        Dataset("x", ["a"], {"train": Split(["t"], [3])}, "")
    with pytest.raises(ValueError):
        Dataset("x", ["a", "b"], {"dev": sp}, "")
    ds = Dataset("x", ["a", "b"], {"test": sp, "validation": sp, "train": sp}, "src")
    assert list(ds.splits) == ["train", "validation", "test"]


# ---------------------------------------------------------------------------------------------
# Subsample and summary


def test_subsample_stratified_deterministic_ordered():
    ds = toy((300, 200, 100))
    sub = ds.subsample(60)
    assert sub.name == "toy[:60]" and sub.classes == ds.classes
    assert len(sub.splits["train"]) == 60 and len(sub.splits["test"]) == 12  # test already small: kept whole
    assert counts(sub, "train") == {"c0": 30, "c1": 20, "c2": 10}
    # original order kept: a subsequence of the source texts
    pos = [ds.splits["train"].texts.index(t) for t in sub.splits["train"].texts]
    assert pos == sorted(pos)
    assert ds.subsample(60) == sub
    other = ds.subsample(60, seed=1)
    assert other.name == "toy[:60@1]"
    assert other.splits["train"].texts != sub.splits["train"].texts
    assert counts(other, "train") == counts(sub, "train")
    assert ds.subsample(10_000).name == "toy"  # nothing cut


def test_subsample_builtin_proportions():
    ds = load_builtin("sst2")
    sub = ds.subsample(1000)
    assert {s: len(sp) for s, sp in sub.splits.items()} == {"train": 1000, "validation": 872, "test": 1000}
    c = counts(sub, "train")
    assert abs(c["positive"] - 1000 * 3610 / 6920) <= 1 and sum(c.values()) == 1000
    assert sub.name == "sst2[:1000]"
    r52 = load_builtin("r52").subsample(100)
    assert set(counts(r52, "train")) == set(r52.classes)  # every class kept when n >= n_classes


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_subsample_rejects_bad_n(bad):
    assert "positive integer" in err(toy().subsample, bad)


def test_summary():
    s = toy().summary()
    assert s["name"] == "toy" and s["n_classes"] == 3 and s["classes"] == ["c0", "c1", "c2"]
    assert s["splits"] == {"train": 60, "test": 12}
    assert s["class_counts"]["train"] == {"c0": 30, "c1": 20, "c2": 10}
    json.dumps(s)


# ---------------------------------------------------------------------------------------------
# User files: round trips


def test_csv_round_trip_custom_columns(tmp_path):
    tr = write(tmp_path / "reviews.csv",
               'id,sentence,sentiment\n1,"good, really good",pos\n2,"he said ""bad""",neg\n'
               '3,"two\nlines",pos\n4,plain text,neg\n')
    te = write(tmp_path / "held.csv", "sentence,sentiment,id\nfine,pos,9\nawful,neg,10\n")
    ds = load_files(tr, te, text_column="sentence", label_column="sentiment")
    assert ds.name == "reviews" and ds.classes == ["neg", "pos"]
    assert ds.splits["train"].texts == ["good, really good", 'he said "bad"', "two\nlines", "plain text"]
    assert ds.label_names("train") == ["pos", "neg", "pos", "neg"]
    assert ds.splits["test"].texts == ["fine", "awful"] and list(ds.splits["test"].labels) == [1, 0]
    assert "reviews.csv" in ds.source and "held.csv" in ds.source
    again = load_dataset(train=str(tr), test=str(te), text_column="sentence", label_column="sentiment")
    assert again == ds


def test_tsv_round_trip(tmp_path):
    tr = write(tmp_path / "train.tsv", "label\tdoc\nsport\tthe match , \"great\" game\nnews\tan election\n"
                                       "sport\t\"quoted\" start without closing\nnews\tmore news\n")
    te = write(tmp_path / "test.tsv", "doc\tlabel\nsome sport\tsport\n")
    ds = load_files(tr, te, text_column="doc")
    assert ds.classes == ["news", "sport"]
    assert ds.splits["train"].texts[0] == 'the match , "great" game'
    assert ds.splits["train"].texts[2] == '"quoted" start without closing'
    assert len(ds.splits["test"]) == 1


def test_jsonl_round_trip_numeric_labels(tmp_path):
    rows = [{"body": f"doc {i}", "y": y} for i, y in enumerate([10, 2, 2, 10, 1, 1.0])]
    tr = write(tmp_path / "train.ndjson", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    te = write(tmp_path / "test.jsonl", '{"body": "x", "y": "2"}\r\n{"y": 10, "body": "z"}')
    ds = load_files(tr, te, text_column="body", label_column="y")
    assert ds.classes == ["1", "2", "10"]  # numeric-looking labels sort numerically, ints become strings
    assert ds.label_names("train") == ["10", "2", "2", "10", "1", "1"]
    assert ds.label_names("test") == ["2", "10"]


def test_format_override_bom_and_case_insensitive_columns(tmp_path):
    p = write(tmp_path / "data.txt", b"\xef\xbb\xbfText,Label\nhello,a\nworld,b\nagain,a\nmore,b\n")
    msg = err(load_files, p)  # no --format flag exists: the hint names the extensions and format=
    assert "--format" not in msg and "format=" in msg and ".csv" in msg
    ds = load_files(p, p, format="csv")
    assert ds.splits["train"].texts == ["hello", "world", "again", "more"]


def test_latin1_with_encoding(tmp_path):
    p = write(tmp_path / "fr.csv", "text,label\ncaf\xe9,a\nna\xefve,b\n".encode("latin-1"))
    ds = load_files(p, p, encoding="latin-1")
    assert ds.splits["train"].texts == ["café", "naïve"]


# ---------------------------------------------------------------------------------------------
# User files: errors


def test_file_not_found(tmp_path):
    msg = err(load_files, tmp_path / "nope.csv")
    assert "nope.csv" in msg and "not found" in msg
    msg = err(load_files, write(tmp_path / "ok.csv", "text,label\na,x\nb,y\n"), tmp_path / "gone.jsonl")
    assert "gone.jsonl" in msg and "not found" in msg


@pytest.mark.parametrize("fname,content,expect", [
    ("e.csv", "", "empty"),
    ("e.csv", "\n  \n", "empty"),
    ("e.jsonl", "", "empty"),
    ("h.csv", "text,label\n", "no data rows"),
    ("h.tsv", "text\tlabel\n\n", "no data rows"),
])
def test_empty_files(tmp_path, fname, content, expect):
    msg = err(load_files, write(tmp_path / fname, content))
    assert fname in msg and expect in msg


def test_missing_columns(tmp_path):
    p = write(tmp_path / "cols.csv", "review,stars\ngood,5\nbad,1\n")
    msg = err(load_files, p)
    assert "cols.csv" in msg and "'text'" in msg and "'review'" in msg and "'stars'" in msg and "--text-column" in msg
    msg = err(load_files, p, text_column="review")
    assert "'label'" in msg and "'stars'" in msg and "--label-column" in msg
    j = write(tmp_path / "cols.jsonl", '{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n')
    msg = err(load_files, j)
    assert "cols.jsonl:2" in msg and "'txt'" in msg and "--text-column" in msg


@pytest.mark.parametrize("fname,content,line", [
    ("t.csv", "text,label\nfine,a\n,b\n", 3),
    ("t.csv", "text,label\nfine,a\nok,b\n   ,a\n", 4),
    ("t.tsv", "text\tlabel\nfine\ta\n \tb\n", 3),
    ("crlf.csv", "text,label\r\nfine,a\r\n\r\nok,b\r\n\"\",a\r\n", 5),
    ("t.jsonl", '{"text": "fine", "label": "a"}\n\n{"text": "  ", "label": "b"}\n', 3),
    ("t.jsonl", '{"text": "fine", "label": "a"}\n{"text": null, "label": "b"}\n', 2),
])
def test_empty_text(tmp_path, fname, content, line):
    msg = err(load_files, write(tmp_path / fname, content))
    assert f"{fname}:{line}:" in msg and "empty text" in msg


@pytest.mark.parametrize("fname,content,line", [
    ("l.csv", "text,label\nfine,a\nok,b\nnone,\n", 4),
    ("l.csv", "text,label\nfine,a\nspaces,  \n", 3),
    ("l.jsonl", '{"text": "fine", "label": "a"}\n{"text": "x", "label": null}\n', 2),
    ("l.jsonl", '{"text": "fine", "label": "a"}\n{"text": "x", "label": ""}\n', 2),
])
def test_missing_label(tmp_path, fname, content, line):
    msg = err(load_files, write(tmp_path / fname, content))
    assert f"{fname}:{line}:" in msg and "missing label" in msg


def test_bad_encoding(tmp_path):
    p = write(tmp_path / "enc.csv", b"text,label\nok,a\ncaf\xe9,b\n")
    msg = err(load_files, p)
    assert "enc.csv:3" in msg and "utf-8" in msg and "`encoding` latin-1" in msg
    j = write(tmp_path / "enc.jsonl", b'{"text": "ok", "label": "a"}\n{"text": "\xff", "label": "b"}\n')
    assert "enc.jsonl:2" in err(load_files, j)
    assert "`encoding`" in err(load_files, p, encoding="no-such-codec")


def test_invalid_json(tmp_path):
    p = write(tmp_path / "bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": }\n')
    msg = err(load_files, p)
    assert "bad.jsonl:2" in msg and "invalid JSON" in msg
    q = write(tmp_path / "arr.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n')
    assert "arr.jsonl:2" in err(load_files, q)


def test_unseen_test_label(tmp_path):
    tr = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    te = write(tmp_path / "test.csv", "text,label\nc,pos\nd,neutral\ne,mixed\nf,neutral\n")
    msg = err(load_files, tr, te)
    assert "test.csv:3" in msg and "'neutral'" in msg and "train.csv" in msg
    assert "'mixed' (first at line 4)" in msg


def test_single_class(tmp_path):
    msg = err(load_files, write(tmp_path / "one.csv", "text,label\na,x\nb,x\nc,x\n"))
    assert "one.csv" in msg and "'x'" in msg and "two classes" in msg


def test_malformed_rows(tmp_path):
    msg = err(load_files, write(tmp_path / "f.csv", "text,label\na,x\nb,c,y\n"))
    assert "f.csv:3" in msg and "3 fields" in msg
    msg = err(load_files, write(tmp_path / "q.csv", 'text,label\na,x\n"unclosed,y\nz,x\n'))
    assert "q.csv:3" in msg and "malformed CSV" in msg
    # a quoted multi-line field does not shift later line numbers
    msg = err(load_files, write(tmp_path / "m.csv", 'text,label\n"one\ntwo",x\nthree,y\n,x\n'))
    assert "m.csv:5" in msg


def test_unknown_format(tmp_path):
    p = write(tmp_path / "x.json", '{"text": "a", "label": "b"}\n')
    msg = err(load_files, p)
    assert "x.json" in msg and "format=" in msg and "--format" not in msg
    assert "xml" in err(load_files, p, format="xml")
    assert load_files(write(tmp_path / "y.json", '{"text":"a","label":"b"}\n{"text":"c","label":"d"}\n'),
                      p.with_name("y.json"), format="jsonl").classes == ["b", "d"]


def test_parquet_needs_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    msg = err(load_files, write(tmp_path / "d.parquet", b"PAR1"))
    assert "d.parquet" in msg and "pip install pyarrow" in msg


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"t": ["a", "b", "c", "d"], "y": [1, 0, 1, 0]}), p)
    ds = load_files(p, p, text_column="t", label_column="y")
    assert ds.classes == ["0", "1"] and ds.splits["train"].texts == ["a", "b", "c", "d"]


# ---------------------------------------------------------------------------------------------
# read_texts: texts to classify, no labels


@pytest.mark.parametrize("fname,content", [
    ("in.csv", 'id,body\n1,"hello, world"\n2,second\n\n3,"multi\nline"\n'),
    ("in.tsv", "body\tid\nhello, world\t1\nsecond\t2\n\"multi\nline\"\t3\n"),
    ("in.jsonl", '{"body": "hello, world", "id": 1}\n\n{"body": "second"}\r\n{"body": "multi\\nline"}'),
    ("in.ndjson", '{"body": "hello, world"}\n{"body": "second"}\n{"body": "multi\\nline"}\n'),
])
def test_read_texts_round_trip_custom_column_no_labels(tmp_path, fname, content):
    assert read_texts(write(tmp_path / fname, content), text_column="body") == ["hello, world", "second", "multi\nline"]


def test_read_texts_ignores_labels_format_override_and_encoding(tmp_path):
    p = write(tmp_path / "lab.csv", "text,label\na,x\nb,\nc,y\n")  # a missing label is no problem here
    assert read_texts(p) == ["a", "b", "c"]
    q = write(tmp_path / "data.txt", b"\xef\xbb\xbfText\nhello\n")
    assert "format=" in err(read_texts, q)
    assert read_texts(q, format="csv") == ["hello"]
    assert read_texts(write(tmp_path / "fr.csv", "text\ncaf\xe9\n".encode("latin-1")), encoding="latin-1") == ["café"]


def test_read_texts_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"t": ["a", "b"]}), p)
    assert read_texts(p, text_column="t") == ["a", "b"]
    assert "d.parquet" in err(read_texts, p) and "'t'" in err(read_texts, p)


def test_read_texts_missing_column(tmp_path):
    msg = err(read_texts, write(tmp_path / "cols.csv", "review,stars\ngood,5\n"))
    assert "cols.csv:1" in msg and "'text'" in msg and "'review'" in msg and "'stars'" in msg
    assert "--text-column" in msg and "--label-column" not in msg
    msg = err(read_texts, write(tmp_path / "cols.jsonl", '{"text": "a"}\n{"txt": "b"}\n'))
    assert "cols.jsonl:2" in msg and "'txt'" in msg and "--text-column" in msg


@pytest.mark.parametrize("fname,content,line", [
    ("t.csv", "text,label\nfine,a\n,b\n", 3),
    ("t.tsv", "id\ttext\n1\tfine\n2\t \n", 3),
    ("t.jsonl", '{"text": "fine"}\n\n{"text": "  "}\n', 3),
    ("t.jsonl", '{"text": "fine"}\n{"text": null}\n', 2),
])
def test_read_texts_empty_text(tmp_path, fname, content, line):
    msg = err(read_texts, write(tmp_path / fname, content))
    assert f"{fname}:{line}:" in msg and "empty text" in msg


@pytest.mark.parametrize("fname,content,expect", [
    ("e.csv", "", "empty"),
    ("e.jsonl", "\n", "empty"),
    ("h.csv", "text\n", "no data rows"),
])
def test_read_texts_empty_files(tmp_path, fname, content, expect):
    msg = err(read_texts, write(tmp_path / fname, content))
    assert fname in msg and expect in msg


def test_read_texts_other_errors(tmp_path):
    msg = err(read_texts, tmp_path / "nope.csv")
    assert "nope.csv" in msg and "not found" in msg
    msg = err(read_texts, write(tmp_path / "bad.jsonl", '{"text": "a"}\n{"text": }\n'))
    assert "bad.jsonl:2" in msg and "invalid JSON" in msg and "label" not in msg
    assert "3 fields" in err(read_texts, write(tmp_path / "f.csv", "text,id\na,1\nb,c,2\n"))
    assert "is a int" in err(read_texts, write(tmp_path / "n.jsonl", '{"text": 5}\n'))


def test_read_texts_bad_encoding(tmp_path):
    msg = err(read_texts, write(tmp_path / "enc.csv", b"text\nok\ncaf\xe9\n"))
    assert "enc.csv:3" in msg and "utf-8" in msg and "`encoding` latin-1" in msg
    assert "enc.jsonl:2" in err(read_texts, write(tmp_path / "enc.jsonl", b'{"text": "ok"}\n{"text": "\xff"}\n'))
    assert "`encoding`" in err(read_texts, tmp_path / "enc.csv", encoding="no-such-codec")


# ---------------------------------------------------------------------------------------------
# Held-out test split and load_dataset


def _labeled_csv(path, per_class: dict[str, int]):
    lines = ["text,label"]
    i = 0
    for rep in range(max(per_class.values())):
        for lab, n in per_class.items():
            if rep < n:
                lines.append(f"text {i},{lab}")
                i += 1
    return write(path, "\n".join(lines) + "\n")


def test_test_fraction_split(tmp_path):
    p = _labeled_csv(tmp_path / "all.csv", {"a": 50, "b": 30, "c": 20, "solo": 1})
    ds = load_files(p, test_fraction=0.2, seed=3)
    assert ds.classes == ["a", "b", "c", "solo"]
    assert len(ds.splits["test"]) == 20 and len(ds.splits["train"]) == 81
    assert counts(ds, "test") == {"a": 10, "b": 6, "c": 4}  # stratified; the single 'solo' stays in train
    assert counts(ds, "train")["solo"] == 1
    tr, te = ds.splits["train"].texts, ds.splits["test"].texts
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == 101
    order = [int(t.split()[1]) for t in tr]
    assert order == sorted(order)
    assert load_files(p, test_fraction=0.2, seed=3) == ds  # deterministic
    other = load_files(p, test_fraction=0.2, seed=4)
    assert other.splits["test"].texts != te and counts(other, "test") == counts(ds, "test")
    assert "seed 3" in ds.source
    assert len(load_files(p, test_fraction=0.5).splits["test"]) == 50


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_bad_test_fraction(tmp_path, bad):
    p = _labeled_csv(tmp_path / "all.csv", {"a": 5, "b": 5})
    assert "`test_fraction`" in err(load_files, p, test_fraction=bad)


def test_too_small_for_holdout(tmp_path):
    p = _labeled_csv(tmp_path / "tiny.csv", {"a": 1, "b": 1})
    msg = err(load_files, p)
    assert "tiny.csv" in msg and "`test`" in msg


def test_load_dataset_arguments(tmp_path):
    p = _labeled_csv(tmp_path / "d.csv", {"a": 5, "b": 5})
    assert "not both" in err(load_dataset, "sst2", train=p)
    msg = err(load_dataset)
    assert "sst2" in msg and "`train`" in msg
    assert "`test`" in err(load_dataset, "sst2", test=p)
    assert "--text-column" in err(load_dataset, "sst2", text_column="body")
    assert load_dataset("mr", text_column="text", encoding=None).name == "mr"  # defaults are fine
    ds = load_dataset(train=p, test_fraction=0.4, format=None)
    assert len(ds.splits["test"]) == 4
    with pytest.raises(TypeError):
        load_dataset("sst2", colour="red")


# ---------------------------------------------------------------------------------------------
# The packaged files are what scripts/build_datasets.py makes from the raw data


def test_build_script_reproduces_packaged_data(capsys):
    from helpers import load_script

    mod = load_script("scripts/build_datasets.py")
    if not (mod.DEFAULT_RAW / "SOURCES.md").is_file():
        pytest.skip(f"raw data not available at {mod.DEFAULT_RAW}")
    assert mod.main(["--check"]) == 0, capsys.readouterr().err
