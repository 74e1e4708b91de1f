"""Tests for layerfuse.train: heads, split, early stopping, seeds, save/load."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerfuse.data.sampling import stratified_validation_split
from layerfuse.errors import LayerfuseError
from layerfuse.model.heads import HEADS, Dropout, FusionClassifierNet, LinearHead, MLPHead
from layerfuse.model.metrics import classification_metrics
from layerfuse.model.saving import load_net, save_net
from layerfuse.model.training import _flush_denormal_on, evaluate, fit_head, fit_seeds

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_task(n=450, n_classes=3, widths=(20, 30), noise=2.0, seed=0, offset=5.0):
    """Separable-ish task: class centroids in each source plus noise and a large offset/scale."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    sources = []
    for w in widths:
        centroids = rng.normal(size=(n_classes, w))
        scale = rng.uniform(0.5, 20.0, size=w)  # unstandardised features
        sources.append(((centroids[y] + noise * rng.normal(size=(n, w))) * scale + offset).astype(np.float32))
    return sources, y


@pytest.fixture(scope="module")
def task():
    sources, y = make_task()
    tr, te = slice(0, 300), slice(300, None)
    return [s[tr] for s in sources], y[tr], [s[te] for s in sources], y[te]


# --------------------------------------------------------------------------------------------
# heads and net


def test_heads():
    assert set(HEADS) == {"mlp", "logreg"}
    mlp = MLPHead(40, 5)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 1024), (1024, 256), (256, 5)]
    drops = [m.p for m in mlp.modules() if isinstance(m, Dropout)]
    assert drops == [0.5, 0.3]
    lin = LinearHead(40, 5)
    assert sum(isinstance(m, torch.nn.Linear) for m in lin.modules()) == 1
    assert lin(torch.randn(3, 40)).shape == (3, 5)


@pytest.mark.parametrize("head", ["mlp", "logreg"])
def test_fit_head_learns_the_task(task, head):
    xtr, ytr, xte, yte = task
    model = fit_head(xtr, ytr, n_classes=3, head=head, max_epochs=25, patience=5)
    m = evaluate(model, xte, yte)
    assert m["acc"] > 0.8 and m["macro_f1"] > 0.8  # chance is 1/3
    assert not model.net.training
    assert model.fusion == "concat" and model.head == head
    assert model.n_params == sum(p.numel() for p in model.net.parameters())
    assert model.val_acc is not None and 0 <= model.val_f1 <= 1
    assert model.train_seconds > 0
    proba = model.predict_proba(xte)
    assert proba.shape == (len(yte), 3) and proba.dtype == np.float32
    assert np.allclose(proba.sum(1), 1, atol=1e-5)
    assert np.array_equal(model.predict(xte), proba.argmax(1))


@pytest.mark.parametrize("fusion", ["gated", "quaternion+res"])
def test_fit_head_with_projecting_fusion_and_scalar_mix_source(fusion):
    sources, y = make_task(n=300, widths=(16, 12), noise=1.0)
    # second source as [N, K, d]: 3 layers, only the middle one carries the signal
    rng = np.random.default_rng(1)
    layered = np.stack([rng.normal(size=sources[1].shape), sources[1], rng.normal(size=sources[1].shape)], axis=1)
    xs = [sources[0], layered.astype(np.float32)]
    model = fit_head(
        [x[:200] for x in xs], y[:200], n_classes=3, fusion=fusion, head="logreg", proj_dim=32, max_epochs=20
    )
    assert model.config["source_dims"] == [16, [3, 12]]
    assert evaluate(model, [x[200:] for x in xs], y[200:])["acc"] > 0.8
    # the scalar mix learned to favour the informative layer
    assert int(model.net.fusion.mixes[1].layer_weights().argmax()) == 1


def test_standardisation_uses_training_part_only(task):
    xtr, ytr, _, _ = task
    model = fit_head(xtr, ytr, n_classes=3, head="logreg", max_epochs=2)
    train_idx, _ = stratified_validation_split(ytr, 0.1, 0)
    for i, x in enumerate(xtr):
        mean = getattr(model.net, f"input_mean_{i}").numpy()
        assert np.allclose(mean, x[train_idx].astype(np.float64).mean(0), rtol=1e-5, atol=1e-4)
        assert not np.allclose(mean, x.astype(np.float64).mean(0), rtol=1e-7, atol=1e-7)


# --------------------------------------------------------------------------------------------
# validation split


def test_stratified_split_is_stratified_and_deterministic():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 3], [500, 200, 40, 3])
    y = y[rng.permutation(len(y))]
    tr, va = stratified_validation_split(y, 0.1, seed=7)
    tr2, va2 = stratified_validation_split(y, 0.1, seed=7)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, stratified_validation_split(y, 0.1, seed=8)[1])
    assert np.intersect1d(tr, va).size == 0 and np.array_equal(np.union1d(tr, va), np.arange(len(y)))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert len(va) == round(0.1 * len(y))
    counts = {c: int(np.sum(y[va] == c)) for c in range(4)}
    assert counts[0] == 50 and counts[1] == 20 and counts[2] == 4 and counts[3] <= 1


def test_split_keeps_every_class_in_train():
    y = np.array([0] * 20 + [1] * 2 + [2] * 1 + [3] * 3)
    for seed in range(5):
        tr, va = stratified_validation_split(y, 0.5, seed=seed)
        assert set(y[tr]) == {0, 1, 2, 3}
        assert 2 not in set(y[va])


def test_split_rejects_bad_fraction():
    with pytest.raises(LayerfuseError, match="fraction"):
        stratified_validation_split(np.array([0, 1, 0, 1]), 1.5)


# --------------------------------------------------------------------------------------------
# early stopping and determinism


def test_early_stopping_restores_best_weights():
    # labels unrelated to the features: the MLP overfits and the validation score stops improving
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    y = rng.integers(0, 2, 200)
    model = fit_head([x], y, n_classes=2, val_fraction=0.2, max_epochs=60, patience=3, seed=0)
    runs = len(model.history)
    assert runs < 60, "patience should have stopped training"
    assert model.best_epoch < runs and runs == model.best_epoch + 3
    best = model.history[model.best_epoch - 1]
    assert best["val_f1"] == model.val_f1 == max(h["val_f1"] for h in model.history)
    # the returned weights are those of the best epoch, not the last
    _, va = stratified_validation_split(y, 0.2, 0)
    logits = torch.log(torch.from_numpy(model.predict_proba([x[va]])))
    m = classification_metrics(y[va], logits.argmax(1).numpy())
    assert m["macro_f1"] == pytest.approx(model.val_f1)
    assert m["acc"] == pytest.approx(model.val_acc)
    assert float(F.nll_loss(logits, torch.from_numpy(y[va]))) == pytest.approx(best["val_loss"], rel=1e-4)
    assert model.history[-1]["val_loss"] != pytest.approx(best["val_loss"], rel=1e-4)


def test_same_seed_same_model_and_global_rng_untouched(task):
    xtr, ytr, xte, _ = task
    state = torch.random.get_rng_state()
    flush = _flush_denormal_on()
    a = fit_head(xtr, ytr, n_classes=3, head="mlp", max_epochs=3, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    assert _flush_denormal_on() == flush  # training flushes subnormals, then restores the mode
    b = fit_head(xtr, ytr, n_classes=3, head="mlp", max_epochs=3, seed=5)
    c = fit_head(xtr, ytr, n_classes=3, head="mlp", max_epochs=3, seed=6)
    assert np.array_equal(a.predict_proba(xte), b.predict_proba(xte))
    assert not np.array_equal(a.predict_proba(xte), c.predict_proba(xte))


def test_no_validation_trains_all_epochs(task):
    xtr, ytr, _, _ = task
    model = fit_head(xtr, ytr, n_classes=3, head="logreg", val_fraction=0, max_epochs=4)
    assert len(model.history) == 4 and model.best_epoch == 4
    assert model.val_acc is None and model.val_f1 is None


# --------------------------------------------------------------------------------------------
# seeds and evaluation


def test_fit_seeds_reports_mean_and_std(task):
    xtr, ytr, xte, yte = task
    res = fit_seeds(xtr, ytr, xte, yte, seeds=(0, 1, 2), n_classes=3, head="logreg", max_epochs=10)
    assert res.seeds == [0, 1, 2] and len(res.per_seed) == 3 and len(res.models) == 3
    accs = [r["test_acc"] for r in res.per_seed]
    f1s = [r["test_macro_f1"] for r in res.per_seed]
    assert res.acc_mean == pytest.approx(np.mean(accs)) and res.acc_std == pytest.approx(np.std(accs, ddof=1))
    assert res.f1_mean == pytest.approx(np.mean(f1s)) and res.f1_std == pytest.approx(np.std(f1s, ddof=1))
    assert res.val_f1_mean == pytest.approx(np.mean([m.val_f1 for m in res.models]))
    assert res.acc_mean > 0.8
    for r, m in zip(res.per_seed, res.models):
        assert r["test_acc"] == evaluate(m, xte, yte)["acc"]
        assert r["n_params"] == m.n_params and r["val_f1"] == m.val_f1
    summary = res.summary()
    assert "models" not in summary
    json.dumps(summary)


def test_seeds_trained_apart_merge_into_the_same_row(task):
    """Grid workers train one seed per task; merged, the seeds give fit_seeds' row (times aside)."""
    from layerfuse.model.training import merge_seed_results

    xtr, ytr, xte, yte = task
    kw = dict(n_classes=3, head="mlp", max_epochs=6)
    whole = fit_seeds(xtr, ytr, xte, yte, seeds=(0, 1, 2), **kw)
    merged = merge_seed_results([fit_seeds(xtr, ytr, xte, yte, seeds=(s,), **kw) for s in (0, 1, 2)])

    def timeless(res):
        out = {k: v for k, v in res.summary().items() if "seconds" not in k}
        out["per_seed"] = [{k: v for k, v in r.items() if k != "train_seconds"} for r in out.get("per_seed", [])]
        return out

    assert timeless(merged) == timeless(whole) and merged.seeds == [0, 1, 2] and len(merged.models) == 3


def test_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 100), rng.integers(0, 4, 100)
    m = classification_metrics(y, p)
    assert m["acc"] == pytest.approx(accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))


# --------------------------------------------------------------------------------------------
# save / load


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    sources, y = make_task(n=200, widths=(10, 6))
    layered = np.stack([sources[1], sources[1] * 0.5 + 1], axis=1)
    xs = [sources[0], layered]
    model = fit_head(
        xs, y, n_classes=3, fusion="moe", head="mlp", proj_dim=16, max_epochs=3, fusion_kwargs={"n_experts": 2}
    )
    d = tmp_path_factory.mktemp("net")
    save_net(model, d)
    return model, d, xs


def test_save_load_gives_identical_probabilities(saved):
    model, d, xs = saved
    loaded = load_net(d)
    assert isinstance(loaded.net, FusionClassifierNet) and not loaded.net.training
    assert loaded.fusion == "moe" and loaded.head == "mlp" and loaded.net.fusion.n_experts == 2
    assert loaded.best_epoch == model.best_epoch and loaded.val_f1 == model.val_f1
    assert loaded.n_params == model.n_params and loaded.history == model.history
    assert np.array_equal(loaded.predict_proba(xs), model.predict_proba(xs))


def _copy(d, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    for f in d.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def test_load_missing_files(saved, tmp_path):
    _, d, _ = saved
    with pytest.raises(LayerfuseError, match="not a folder"):
        load_net(tmp_path / "nope")
    c = _copy(d, tmp_path)
    (c / "net.safetensors").unlink()
    with pytest.raises(LayerfuseError, match=r"net\.safetensors: file missing"):
        load_net(c)
    (c / "net.json").unlink()
    with pytest.raises(LayerfuseError, match=r"net\.json: file missing"):
        load_net(c)


def test_load_bad_json(saved, tmp_path):
    _, d, _ = saved
    c = _copy(d, tmp_path)
    (c / "net.json").write_text("{not json")
    with pytest.raises(LayerfuseError, match=r"net\.json: not valid JSON"):
        load_net(c)
    meta = json.loads((d / "net.json").read_text())
    del meta["head"]
    (c / "net.json").write_text(json.dumps(meta))
    with pytest.raises(LayerfuseError, match=r"net\.json: missing field\(s\) head"):
        load_net(c)
    meta = json.loads((d / "net.json").read_text())
    meta["fusion"] = "nonesuch"
    (c / "net.json").write_text(json.dumps(meta))
    with pytest.raises(LayerfuseError, match=r"net\.json: unknown fusion 'nonesuch'"):
        load_net(c)


def test_load_shape_mismatch(saved, tmp_path):
    _, d, _ = saved
    c = _copy(d, tmp_path)
    meta = json.loads((d / "net.json").read_text())
    meta["source_dims"][0] = 11
    (c / "net.json").write_text(json.dumps(meta))
    with pytest.raises(LayerfuseError, match=r"net\.safetensors: tensor .* has shape"):
        load_net(c)
    meta = json.loads((d / "net.json").read_text())
    meta["fusion_kwargs"] = {"n_experts": 5}
    (c / "net.json").write_text(json.dumps(meta))
    with pytest.raises(LayerfuseError, match=r"net\.safetensors"):
        load_net(c)


def test_load_corrupt_weights(saved, tmp_path):
    _, d, _ = saved
    c = _copy(d, tmp_path)
    (c / "net.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(LayerfuseError, match=r"net\.safetensors: unreadable"):
        load_net(c)


# --------------------------------------------------------------------------------------------
# input errors


def test_input_errors(task):
    xtr, ytr, xte, _ = task
    with pytest.raises(LayerfuseError, match="row counts"):
        fit_head([xtr[0], xtr[1][:-1]], ytr, n_classes=3)
    with pytest.raises(LayerfuseError, match="labels"):
        fit_head(xtr, ytr[:-1], n_classes=3)
    with pytest.raises(LayerfuseError, match="n_classes=2"):
        fit_head(xtr, ytr, n_classes=2)
    with pytest.raises(LayerfuseError, match="unknown head 'svm': choose from mlp, logreg"):
        fit_head(xtr, ytr, n_classes=3, head="svm")
    with pytest.raises(LayerfuseError, match="unknown fusion"):
        fit_head(xtr, ytr, n_classes=3, fusion="nope")
    with pytest.raises(LayerfuseError, match="NaN"):
        fit_head([np.full((300, 4), np.nan)], ytr, n_classes=3)
    with pytest.raises(LayerfuseError, match="integer class ids"):
        fit_head(xtr, ytr.astype(str), n_classes=3)
    with pytest.raises(LayerfuseError, match=r"\[N, d\]"):
        fit_head([xtr[0][:, 0]], ytr, n_classes=3)
    model = fit_head(xtr, ytr, n_classes=3, head="logreg", max_epochs=1)
    with pytest.raises(LayerfuseError, match="expects"):
        model.predict_proba([xte[0], xte[1][:, :5]])
    with pytest.raises(LayerfuseError, match="2 source"):
        model.predict_proba([xte[0]])


def test_dropout_zeroes_p_and_rescales_the_rest_in_training_only():
    torch.manual_seed(0)
    x = torch.ones(200, 500, requires_grad=True)
    d = Dropout(0.3).train()
    y = d(x)
    zero = (y == 0).float().mean().item()
    assert abs(zero - 0.3) < 0.01  # 100k draws: the std of the fraction is ~0.0015
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.7)  # gradient through the same mask
    assert torch.equal(d.eval()(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_bfloat16_precision_trains_under_autocast_and_keeps_float32_weights(task):
    xtr, ytr, xte, yte = task
    m = fit_head(xtr, ytr, n_classes=3, max_epochs=8, patience=3, precision="bfloat16")
    assert m.config["precision"] == "bfloat16"
    assert all(p.dtype == torch.float32 for p in m.net.parameters())
    assert (m.predict(xte) == yte).mean() > 0.6  # it learns the task (chance is 1/3)
    assert "precision" not in fit_head(xtr, ytr, n_classes=3, max_epochs=1).config  # float32: as before
    with pytest.raises(LayerfuseError, match="precision"):
        fit_head(xtr, ytr, n_classes=3, precision="float16")
