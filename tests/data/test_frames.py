"""pandas DataFrames, Hugging Face datasets and save_to_disk folders as data; Parquet export."""

from __future__ import annotations

import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
datasets = pytest.importorskip("datasets")

from layerfuse.cli.main import main  # noqa: E402
from layerfuse.data.files import load_files  # noqa: E402
from layerfuse.data.loading import load_data, load_dataset  # noqa: E402
from layerfuse.errors import LayerfuseError  # noqa: E402

WORDS = {"pos": ["good", "great", "lovely", "fun"], "neg": ["bad", "awful", "dull", "boring"]}


def rows(n=40, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lab = "pos" if i % 2 else "neg"
        out.append({"body": f"the film was {rng.choice(WORDS[lab])} and {'very ' * int(rng.integers(0, 3))}long",
                    "stars": lab, "other": i})
    return out


def same(a, b):
    assert a.classes == b.classes and list(a.splits) == list(b.splits)
    for s in a.splits:
        assert a.splits[s].texts == b.splits[s].texts
        assert a.splits[s].labels.tolist() == b.splits[s].labels.tolist()


def test_a_dataframe_loads_like_the_same_csv(tmp_path):
    df = pd.DataFrame(rows())
    df.to_csv(tmp_path / "t.csv", index=False)
    want = load_files(tmp_path / "t.csv", text_column="body", label_column="stars", seed=3)
    got = load_dataset(train=df, text_column="body", label_column="stars", seed=3)
    same(got, want)
    assert got.classes == ["neg", "pos"] and len(got.splits["test"]) == 8


def test_numeric_labels_and_a_test_frame(tmp_path):
    df = pd.DataFrame({"text": [f"film {w}" for w in "abcdefgh"], "label": [1, 2, 10, 1, 2, 10, 1, 2]})
    ds = load_dataset(train=df, test=df.iloc[:3])
    assert ds.classes == ["1", "2", "10"]  # sorted as numbers, as files are
    assert ds.splits["test"].labels.tolist() == [0, 1, 2]


def test_a_table_and_a_file_mix_either_way(tmp_path):
    df = pd.DataFrame(rows(20))
    df.iloc[15:].to_csv(tmp_path / "test.csv", index=False)
    a = load_dataset(train=df.iloc[:15], test=tmp_path / "test.csv", text_column="body", label_column="stars")
    df.iloc[:15].to_csv(tmp_path / "train.csv", index=False)
    b = load_dataset(train=tmp_path / "train.csv", test=df.iloc[15:], text_column="body", label_column="stars")
    same(a, b)
    assert a.splits["test"].texts == df["body"].tolist()[15:]


def test_hf_dataset_classlabel_gives_names_and_dict_gives_splits(tmp_path):
    feats = datasets.Features({"body": datasets.Value("string"), "stars": datasets.ClassLabel(names=["neg", "pos"]),
                               "other": datasets.Value("int64")})
    r = rows()
    enc = [{**x, "stars": ["neg", "pos"].index(x["stars"])} for x in r]
    hf = datasets.Dataset.from_list(enc, features=feats)
    a = load_dataset(train=hf, text_column="body", label_column="stars")
    b = load_dataset(train=pd.DataFrame(r), text_column="body", label_column="stars")
    same(a, b)
    dd = datasets.DatasetDict({"train": hf.select(range(30)), "validation": hf.select(range(30, 34)),
                               "test": hf.select(range(34, 40))})
    got = load_dataset(train=dd, text_column="body", label_column="stars")
    assert list(got.splits) == ["train", "validation", "test"]
    assert got.splits["test"].texts == [x["body"] for x in r[34:]]
    assert got.splits["test"].labels.tolist() == [["neg", "pos"].index(x["stars"]) for x in r[34:]]
    dd.save_to_disk(str(tmp_path / "saved"))
    same(load_dataset(train=str(tmp_path / "saved"), text_column="body", label_column="stars"), got)
    hf.save_to_disk(str(tmp_path / "one"))
    same(load_dataset(train=tmp_path / "one", text_column="body", label_column="stars"), a)


@pytest.mark.parametrize("make,kw,phrase", [
    (lambda: pd.DataFrame(rows()), {}, "no text column 'text'; columns found: 'body', 'stars', 'other'; "
                                       "pass text_column=NAME"),
    (lambda: pd.DataFrame(rows()), {"text_column": "body"}, "no label column 'label'"),
    (lambda: pd.DataFrame({"text": ["a", " ", "c"], "label": [0, 1, 0]}, index=[10, 11, 12]), {},
     "row at index 11: empty text in 'text'"),
    (lambda: pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", None, "y"]}), {},
     "row at index 1: missing label in 'label'"),
    (lambda: pd.DataFrame({"text": ["a", 5, "c"], "label": ["x", "y", "y"]}), {},
     "text in 'text' is a int, not a string"),
    (lambda: pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]}), {}, "a classifier needs at least two classes"),
    (lambda: datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["x", "y", ""]}), {},
     "train (Dataset)[2]: missing label"),
    (lambda: datasets.DatasetDict({"fit": datasets.Dataset.from_dict({"text": ["a"], "label": ["x"]})}), {},
     "no 'train' split; splits found: 'fit'"),
])
def test_bad_tables_are_one_clear_error(make, kw, phrase):
    with pytest.raises(LayerfuseError) as e:
        load_dataset(train=make(), **kw)
    assert phrase in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_test_label_unseen_in_train_names_the_row():
    tr = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"]})
    te = pd.DataFrame({"text": ["e", "f"], "label": ["x", "z"]}, index=["r1", "r2"])
    with pytest.raises(LayerfuseError, match="row at index 'r2': label 'z' never occurs in the training data"):
        load_dataset(train=tr, test=te)


def test_a_single_long_string_is_not_mistaken_for_a_folder():
    from layerfuse.data.frames import is_table_like

    assert not is_table_like("a very long review " * 500) and not is_table_like("nul\0byte")
    assert not is_table_like(["a", "b"]) and not is_table_like("no/such/folder")


def test_a_streaming_dataset_is_refused_clearly():
    stream = datasets.Dataset.from_dict({"text": ["a"], "label": ["x"]}).to_iterable_dataset()
    with pytest.raises(LayerfuseError, match="streaming"):
        load_dataset(train=stream)


def test_a_run_config_takes_a_saved_folder_and_a_dataframe(tmp_path):
    from layerfuse.run.config_file import load_config_file, merge_config

    datasets.Dataset.from_list(rows()).save_to_disk(str(tmp_path / "saved"))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"data:\n  train: {tmp_path / 'saved'}\n  text_column: body\n  label_column: stars\n")
    cfg = load_config_file(cfg_file)
    a = load_data(cfg["data"])
    b = load_data(merge_config({"data": {"train": pd.DataFrame(rows()), "text_column": "body",
                                         "label_column": "stars"}})["data"])
    same(a, b)
    assert len(a.splits["train"]) == 32


# ---------------------------------------------------------------------------------------------
# With a (tiny) model: the estimator, extract, the CLI and the Parquet export


@pytest.fixture()
def frame():
    return pd.DataFrame(rows(48))


@pytest.mark.usefixtures("one_torch_thread")
def test_estimator_fits_and_predicts_a_dataframe_like_lists(tiny_model, cache_dir, frame):
    from layerfuse.estimator import LayerFusionClassifier

    kw = dict(models=tiny_model, layers="best", head="logreg", folds=3, windows=2, max_epochs=15, proj_dim=16,
              text_column="body", label_column="stars")
    a = LayerFusionClassifier(**kw).fit(frame)
    b = LayerFusionClassifier(**kw).fit(frame["body"].tolist(), frame["stars"].tolist())
    np.testing.assert_array_equal(a.predict_proba(frame), b.predict_proba(frame["body"].tolist()))
    hf = datasets.Dataset.from_pandas(frame)
    assert list(a.predict(hf)) == list(b.predict(frame["body"].tolist()))
    with pytest.raises(LayerfuseError, match="no text column 'body'"):
        a.predict(frame.rename(columns={"body": "txt"}))
    with pytest.raises(LayerfuseError, match="pass one split"):
        a.predict(datasets.DatasetDict({"train": hf, "test": hf}))


@pytest.mark.usefixtures("one_torch_thread")
def test_extract_takes_a_dataframe_and_exports_parquet(tiny_model, cache_dir, frame, tmp_path):
    import pyarrow.parquet as pq

    from layerfuse.embed.export import export_parquet
    from layerfuse.embed.extract import extract

    ds = load_dataset(train=frame, text_column="body", label_column="stars")
    emb = extract(tiny_model, train=frame, text_column="body", label_column="stars", poolings="mean,last",
                  progress=False)
    man = export_parquet(emb, tmp_path / "exp", ds, row_group=7)
    assert json.loads((tmp_path / "exp" / "manifest.json").read_text()) == man
    assert set(man["splits"]) == {"train", "test"} and man["layers"] == [0, 1, 2, 3]
    for split in ("train", "test"):
        t = pq.read_table(tmp_path / "exp" / f"{split}.parquet")
        assert t.column_names == man["columns"] and t.num_rows == len(ds.splits[split])
        assert t.column("text").to_pylist() == ds.splits[split].texts
        assert t.column("label_id").to_pylist() == ds.splits[split].labels.tolist()
        assert t.column("label").to_pylist() == [ds.classes[i] for i in ds.splits[split].labels]
        for layer in (0, 3):
            for pooling in ("mean", "last"):
                got = np.array(t.column(f"layer_{layer:02d}_{pooling}").to_pylist(), dtype=np.float32)
                np.testing.assert_array_equal(got, emb.get(split, layer, pooling))


@pytest.mark.usefixtures("one_torch_thread")
def test_cli_extract_reads_a_saved_dataset_and_exports(tiny_model, cache_dir, tmp_path, capsys):
    datasets.Dataset.from_list(rows(24)).save_to_disk(str(tmp_path / "saved"))
    code = main(["extract", "--models", tiny_model, "--train", str(tmp_path / "saved"), "--text-column", "body",
                 "--label-column", "stars", "--layers", "0,2", "--export", str(tmp_path / "exp"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["export"]["splits"]["train"]["rows"] + summary["export"]["splits"]["test"]["rows"] == 24
    import pyarrow.parquet as pq

    cols = pq.read_table(tmp_path / "exp" / "train.parquet").column_names
    assert cols[3:] == [f"layer_{k:02d}_{p}" for p in ("mean", "last") for k in (0, 1, 2)]
    code = main(["extract", "--models", tiny_model, "--train", str(tmp_path / "saved"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "no text column 'text'" in err and "--text-column" in err
