"""Tests for layerfuse.fusion: every registered strategy, shapes, gradients, errors."""

import math

import pytest
import torch

from layerfuse.errors import LayerfuseError
from layerfuse.model.fusion import FUSIONS, Fusion, ScalarMix, build_fusion, hamilton_product, register_fusion

# Fusions trained end to end by gradient descent; ``stack`` has its own training (tests/model/test_stack_fusion.py).
END_TO_END = sorted(n for n, c in FUSIONS.items() if c.custom_fit is None)

P = 64  # 8 x 8 for matmul, divisible by 4 for quaternion
B = 6

CONFIGS = {
    "one": [12],
    "two": [12, 20],
    "three_3d": [12, (3, 20), 8],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_inputs(dims, batch=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, d, generator=g) if isinstance(d, int) else torch.randn(batch, *d, generator=g)
        for d in dims
    ]


def test_registry_has_all_strategies():
    expected = {
        "concat", "sum", "mean", "hadamard", "matmul", "quaternion", "gated", "attention", "moe",
        "sum+res", "mean+res", "hadamard+res", "matmul+res", "quaternion+res",
    }
    assert expected <= set(FUSIONS)
    for name, cls in FUSIONS.items():
        assert issubclass(cls, Fusion) and cls.name == name


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", END_TO_END)
def test_output_shape_matches_out_dim(name, config):
    dims = CONFIGS[config]
    torch.manual_seed(0)
    f = build_fusion(name, dims, proj_dim=P)
    out = f(make_inputs(dims))
    assert out.shape == (B, f.out_dim)
    assert torch.isfinite(out).all()
    widths = [d if isinstance(d, int) else d[1] for d in dims]
    if name == "concat":
        assert f.out_dim == sum(widths)
    elif name.endswith("+res"):
        assert f.out_dim == sum(widths) + P
    else:
        assert f.out_dim == P


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", END_TO_END)
def test_gradients_reach_every_parameter(name, config):
    dims = CONFIGS[config]
    torch.manual_seed(1)
    f = build_fusion(name, dims, proj_dim=P)
    params = dict(f.named_parameters())
    if name == "concat" and all(isinstance(d, int) for d in dims):
        assert params == {}  # nothing to learn
        return
    out = f(make_inputs(dims, seed=2))
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * r).sum().backward()
    assert params
    for pname, p in params.items():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"
    if name != "concat":
        # every source has its own path into the output (a projection, or the moe/gate input)
        linears = [m for m in f.modules() if isinstance(m, torch.nn.Linear)]
        assert linears
    n_mix = sum(isinstance(m, ScalarMix) for m in f.modules())
    assert n_mix == sum(not isinstance(d, int) for d in dims)


@pytest.mark.parametrize("name", ["sum", "mean", "hadamard", "matmul", "quaternion", "gated", "attention"])
def test_every_source_projection_gets_gradient(name):
    dims = CONFIGS["three_3d"]
    f = build_fusion(name, dims, proj_dim=P)
    assert len(f.proj) == len(dims)
    out = f(make_inputs(dims))
    (out * torch.randn(out.shape)).sum().backward()
    for i, lin in enumerate(f.proj):
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0, f"projection {i}"


def test_inputs_get_gradients_from_every_source():
    dims = CONFIGS["three_3d"]
    for name in sorted(FUSIONS):
        f = build_fusion(name, dims, proj_dim=P)
        xs = [x.requires_grad_() for x in make_inputs(dims)]
        out = f(xs)
        (out * torch.randn(out.shape)).sum().backward()
        for i, x in enumerate(xs):
            assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: source {i}"


@pytest.mark.parametrize("dims", [CONFIGS["two"], CONFIGS["three_3d"], CONFIGS["one"]])
def test_attention_weights_sum_to_one(dims):
    f = build_fusion("attention", dims, proj_dim=P)
    xs = make_inputs(dims)
    f(xs)
    w = f.last_weights
    assert w.shape == (B, len(dims))
    assert torch.allclose(w.sum(1), torch.ones(B), atol=1e-6)
    assert (w >= 0).all()
    assert torch.allclose(f.source_weights(xs), w)
    if len(dims) > 1:
        # per-example weights: not all rows identical
        assert not torch.allclose(w, w[:1].expand_as(w))


def test_moe_gates_and_expert_count():
    dims = CONFIGS["two"]
    f = build_fusion("moe", dims, proj_dim=P)
    assert f.n_experts == 4
    f(make_inputs(dims))
    assert f.last_gates.shape == (B, 4)
    assert torch.allclose(f.last_gates.sum(1), torch.ones(B), atol=1e-6)
    f3 = build_fusion("moe", dims, proj_dim=P, n_experts=3)
    assert f3.experts.out_features == 3 * P and f3.get_config()["kwargs"] == {"n_experts": 3}
    with pytest.raises(LayerfuseError, match="n_experts"):
        build_fusion("moe", dims, proj_dim=P, n_experts=0)


def test_gated_gates_are_convex_for_several_sources():
    dims = CONFIGS["two"]
    f = build_fusion("gated", dims, proj_dim=P)
    f(make_inputs(dims))
    assert f.last_gates.shape == (B, 2, P)
    assert torch.allclose(f.last_gates.sum(1), torch.ones(B, P), atol=1e-6)


@pytest.mark.parametrize("name", ["matmul", "matmul+res"])
@pytest.mark.parametrize("bad", [60, 63, 8 * 8 + 1])
def test_matmul_rejects_non_square_proj_dim(name, bad):
    with pytest.raises(LayerfuseError, match="perfect square"):
        build_fusion(name, [12, 20], proj_dim=bad)


@pytest.mark.parametrize("name", ["quaternion", "quaternion+res"])
@pytest.mark.parametrize("bad", [62, 65, 2])
def test_quaternion_rejects_proj_dim_not_divisible_by_4(name, bad):
    with pytest.raises(LayerfuseError, match="divisible by 4"):
        build_fusion(name, [12, 20], proj_dim=bad)


def test_unknown_name_lists_choices():
    with pytest.raises(LayerfuseError) as info:
        build_fusion("hadamardd", [12])
    msg = str(info.value)
    assert "hadamardd" in msg and "\n" not in msg
    for name in FUSIONS:
        assert name in msg


def test_bad_arguments_raise_layerfuse_errors():
    with pytest.raises(LayerfuseError, match="unknown option"):
        build_fusion("sum", [12], proj_dim=P, n_experts=2)
    with pytest.raises(LayerfuseError, match="proj_dim"):
        build_fusion("sum", [12], proj_dim=0)
    with pytest.raises(LayerfuseError, match="source_dims"):
        build_fusion("sum", [], proj_dim=P)
    with pytest.raises(LayerfuseError, match=r"source_dims\[1\]"):
        build_fusion("sum", [12, (3, 0)], proj_dim=P)
    with pytest.raises(LayerfuseError, match="hidden"):
        build_fusion("attention", [12, 8], proj_dim=P, hidden=0)


def test_forward_checks_sources():
    f = build_fusion("sum", [12, (3, 20)], proj_dim=P)
    with pytest.raises(LayerfuseError, match="2 source"):
        f(make_inputs([12]))
    with pytest.raises(LayerfuseError, match="source 1"):
        f(make_inputs([12, 20]))
    with pytest.raises(LayerfuseError, match="batch sizes"):
        f([torch.randn(4, 12), torch.randn(5, 3, 20)])
    with pytest.raises(LayerfuseError, match="list"):
        f(torch.randn(4, 12))


def test_scalar_mix():
    mix = ScalarMix(3)
    x = torch.randn(5, 3, 7)
    assert torch.allclose(mix(x), x.mean(1), atol=1e-6)  # starts as a plain average
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 50.0, 0.0]))
        mix.gamma.fill_(2.0)
    assert torch.allclose(mix.layer_weights().sum(), torch.tensor(1.0))
    assert torch.allclose(mix(x), 2 * x[:, 1], atol=1e-4)
    with pytest.raises(LayerfuseError):
        mix(torch.randn(5, 4, 7))


def test_single_source_products_are_the_normalised_projection():
    x = make_inputs([12])
    for name in ("hadamard", "matmul", "quaternion"):
        f = build_fusion(name, [12], proj_dim=P)
        expected = torch.nn.functional.layer_norm(f.proj[0](x[0]), (P,))
        assert torch.allclose(f(x), expected, atol=1e-6), name
    f = build_fusion("sum", [12], proj_dim=P)
    assert torch.allclose(f(x).norm(dim=1), torch.ones(B), atol=1e-5)


def test_residual_keeps_the_original_sources():
    dims = [12, (3, 20)]
    f = build_fusion("hadamard+res", dims, proj_dim=P)
    xs = make_inputs(dims)
    out = f(xs)
    assert torch.equal(out[:, :12], xs[0])
    assert torch.allclose(out[:, 12:32], xs[1].mean(1), atol=1e-6)  # scalar mix starts at the average
    base = build_fusion("hadamard", dims, proj_dim=P)
    base.load_state_dict(f.state_dict())
    assert torch.allclose(out[:, 32:], base(xs), atol=1e-6)


def test_hamilton_product_matches_quaternion_algebra():
    one, i, j, k = torch.eye(4)
    assert torch.allclose(hamilton_product(i, j), k)
    assert torch.allclose(hamilton_product(j, i), -k)
    assert torch.allclose(hamilton_product(i, i), -one)
    p, q = torch.randn(10, 4), torch.randn(10, 4)
    # |pq| = |p||q|
    assert torch.allclose(hamilton_product(p, q).norm(dim=-1), p.norm(dim=-1) * q.norm(dim=-1), atol=1e-5)


def test_matmul_multiplies_in_source_order():
    dims = [12, 20]
    f = build_fusion("matmul", dims, proj_dim=P)
    xs = make_inputs(dims)
    a, b = (torch.nn.functional.layer_norm(p(x), (P,)).view(-1, 8, 8) for p, x in zip(f.proj, xs))
    assert torch.allclose(f(xs), (a @ b / math.sqrt(8)).reshape(B, P), atol=1e-5)


@pytest.mark.parametrize("name", ["hadamard", "matmul", "quaternion"])
def test_products_stay_in_a_sane_range(name):
    dims = [12, 20, 16, 8, 30]
    f = build_fusion(name, dims, proj_dim=P)
    out = f(make_inputs(dims, batch=64))
    assert torch.isfinite(out).all()
    assert 0.05 < out.std().item() < 20


def test_register_fusion_adds_a_strategy():
    @register_fusion("_test_first")
    class FirstOnly(Fusion):
        def __init__(self, source_dims, proj_dim=1024):
            super().__init__(source_dims, proj_dim)
            self.fused_dim = self.widths[0]

        def fuse(self, xs):
            return xs[0]

    try:
        f = build_fusion("_test_first", [5, 7])
        assert f(make_inputs([5, 7])).shape == (B, 5)
        with pytest.raises(ValueError):
            register_fusion("_test_first")(FirstOnly)
    finally:
        FUSIONS.pop("_test_first", None)


def test_config_round_trip():
    f = build_fusion("attention", [12, (3, 20)], proj_dim=P, hidden=16)
    cfg = f.get_config()
    assert cfg == {"name": "attention", "source_dims": [12, [3, 20]], "proj_dim": P, "kwargs": {"hidden": 16}}
    g = Fusion.from_config(cfg)
    g.load_state_dict(f.state_dict())
    xs = make_inputs([12, (3, 20)])
    assert torch.equal(f(xs), g(xs))
