"""Properties of the KL projection onto per-token caps (the exact security condition)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from rectify.decoding import caps_from_q, project, project_to_caps

TOL = 1e-9


@st.composite
def problems(draw, min_v: int = 2, max_v: int = 6, zeros: bool = True):
    """(p, c) as float64 tensors: p a distribution (maybe with zeros), c caps in [p_min, 1]."""
    v = draw(st.integers(min_v, max_v))
    w = draw(st.lists(st.floats(0.0, 1.0), min_size=v, max_size=v))
    if zeros:
        w = [x if draw(st.booleans()) or x > 0.5 else 0.0 for x in w]
    w = [x if x >= 1e-12 else 0.0 for x in w]  # sub-1e-200 weights count as zero (see test_tiny_weights)
    assume(sum(w) > 1e-3)
    c = draw(st.lists(st.sampled_from([1e-5, 0.05, 0.3, 1.0]) | st.floats(1e-5, 1.0), min_size=v, max_size=v))
    p = torch.tensor(w, dtype=torch.float64)
    return p / p.sum(), torch.tensor(c, dtype=torch.float64)


def kl(a: np.ndarray, b: np.ndarray) -> float:
    m = a > 0
    return float(np.sum(a[m] * np.log(a[m] / b[m])))


def brute_force(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """min KL(x || p) s.t. 0 <= x <= c, sum x = 1 on supp(p), by SLSQP from several starts."""
    s = p > 0
    ps, cs = p[s], c[s]
    best, best_val = None, np.inf
    starts = [np.minimum(cs, ps), cs / cs.sum(), np.full(len(ps), 1.0 / len(ps))]
    for x0 in starts:
        res = minimize(lambda x: float(np.sum(np.where(x > 0, x * np.log(np.maximum(x, 1e-300) / ps), 0.0))),
                       np.clip(x0, 0, cs), method="SLSQP", bounds=[(0.0, ci) for ci in cs],
                       constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}],
                       options={"ftol": 1e-14, "maxiter": 500})
        if res.success and np.isfinite(res.x).all() and abs(res.x.sum() - 1) < 1e-6 and res.fun < best_val:
            best, best_val = res.x, res.fun
    if best is None:
        return None
    out = np.zeros_like(p)
    out[s] = best
    return out


def bisection(p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """An independent solver: bisection on lambda in sum(min(c, lambda p)) = 1 (feasible rows only)."""
    lo, hi = 1.0, 1.0
    while torch.minimum(c, hi * p).sum() < 1:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if torch.minimum(c, mid * p).sum() < 1 else (lo, mid)
    return torch.minimum(c, hi * p)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_sums_to_one_and_flags(pc):
    p, c = pc
    proj = project(p, c)
    assert abs(float(proj.probs.sum()) - 1.0) < TOL
    assert (proj.probs >= 0).all()
    assert bool(proj.dead_end) == (float(c.sum()) < 1.0)
    assert bool(proj.outside_support) == (float(c[p > 0].sum()) < 1.0 and not bool(proj.dead_end))


@settings(max_examples=300, deadline=None)
@given(problems())
def test_never_exceeds_caps_when_feasible(pc):
    p, c = pc
    assume(float(c.sum()) >= 1.0)
    out = project_to_caps(p, c)
    assert (out <= c + TOL).all()


@settings(max_examples=200, deadline=None)
@given(problems())
def test_identity_when_caps_hold(pc):
    p, c = pc
    c = torch.maximum(c, p)  # p already satisfies the caps
    assert torch.allclose(project_to_caps(p, c), p, atol=TOL, rtol=0)


@settings(max_examples=200, deadline=None)
@given(problems())
def test_zero_probability_tokens_stay_zero_when_support_suffices(pc):
    p, c = pc
    assume(float(c[p > 0].sum()) >= 1.0)
    out = project_to_caps(p, c)
    assert (out[p == 0] == 0).all()
    # The solution has the water-filling form: capped tokens at their cap, the rest share one ratio >= 1.
    free = (out < c - 1e-12) & (p > 0)
    if free.any():
        ratios = out[free] / p[free]
        assert float(ratios.min()) >= 1.0 - 1e-9
        # one shared ratio, up to float64 rounding relative to its size (ratios reach 1e7 when p is tiny)
        assert float(ratios.max() - ratios.min()) <= 1e-9 * float(ratios.max())


@settings(max_examples=150, deadline=None)
@given(problems(max_v=5))
def test_kl_closest_against_brute_force(pc):
    p, c = pc
    assume(float(c[p > 0].sum()) >= 1.0 + 1e-6)
    ours = project_to_caps(p, c).numpy()
    ref = brute_force(p.numpy(), c.numpy())
    assume(ref is not None)  # the optimiser failed from every start (rare; not our solver's fault)
    pn = p.numpy()
    # Ours is feasible and no worse than the numerical optimum (up to the optimiser's tolerance).
    assert kl(ours, pn) <= kl(ref, pn) + 1e-7
    assert np.abs(ours - ref).max() < 1e-3


@settings(max_examples=150, deadline=None)
@given(problems(max_v=40), st.sampled_from([None, 0, 1, 3, 8, 10_000]))
def test_matches_bisection(pc, candidates):
    """Exact whether the capped set fits in the partial sort (candidates) or needs the full sort."""
    p, c = pc
    assume(float(c[p > 0].sum()) >= 1.0 + 1e-6)
    out = project(p, c, candidates=candidates).probs
    assert torch.allclose(out, bisection(p, c), atol=1e-9, rtol=0)


def test_tiny_weights_are_finite():
    """A token with a denormal probability must not overflow lambda into NaNs."""
    p = torch.tensor([2.2e-311, 0.0, 1.0, 0.0], dtype=torch.float64)
    c = torch.tensor([0.05, 1e-5, 1e-5, 1.0], dtype=torch.float64)
    out = project_to_caps(p, c)
    assert torch.isfinite(out).all() and abs(float(out.sum()) - 1) < 1e-12 and (out <= c + 1e-12).all()
    p32 = torch.tensor([1e-44, 1.0 - 1e-7, 1e-7, 0.0])
    out32 = project_to_caps(p32, torch.tensor([1.0, 0.5, 0.5, 1.0]))
    assert torch.isfinite(out32).all() and abs(float(out32.sum()) - 1) < 1e-6


@settings(max_examples=100, deadline=None)
@given(problems(max_v=40))
def test_float32_inputs_match_float64(pc):
    """The loop projects float32 probabilities in float32: same answer to float32 precision."""
    p, c = pc
    out32 = project(p.float(), c.float())
    out64 = project(p, c)
    assert out32.probs.dtype == torch.float32
    assert torch.allclose(out32.probs.double(), out64.probs, atol=2e-6)
    assert abs(float(out32.probs.sum()) - 1) < 1e-5


@pytest.mark.parametrize("share_capped", [0.0, 0.01, 0.4])
def test_partial_sort_equals_full_sort_on_a_large_vocabulary(share_capped):
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(4, 5000, generator=g, dtype=torch.float64) * 2, -1)
    c = 0.3 + 0.7 * torch.rand(4, 5000, generator=g, dtype=torch.float64)
    c[torch.rand(4, 5000, generator=g) < share_capped] = 1e-5  # many tokens capped at p_min
    fast, full = project(p, c).probs, project(p, c, candidates=0).probs
    assert torch.allclose(fast, full, atol=1e-12) and (fast <= c + 1e-12).all()


def test_dead_end_returns_caps_normalised():
    p = torch.tensor([0.7, 0.3, 0.0, 0.0])
    c = torch.tensor([0.1, 0.2, 0.3, 0.1])
    proj = project(p, c)
    assert bool(proj.dead_end) and not bool(proj.outside_support)
    assert torch.allclose(proj.probs, c / c.sum())


def test_outside_support_spreads_remainder_in_proportion_to_caps():
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    c = torch.tensor([0.1, 0.2, 0.5, 0.6], dtype=torch.float64)
    proj = project(p, c)
    assert bool(proj.outside_support) and not bool(proj.dead_end)
    expected = torch.tensor([0.1, 0.2, 0.7 * 0.5 / 1.1, 0.7 * 0.6 / 1.1], dtype=torch.float64)
    assert torch.allclose(proj.probs, expected, atol=1e-12)


def test_outside_support_with_fallback_distribution():
    """The loop passes the untruncated LM distribution: extra mass follows it, still under the caps."""
    p = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0], dtype=torch.float64)
    c = torch.tensor([0.1, 0.2, 0.3, 1.0, 1.0], dtype=torch.float64)
    q = torch.tensor([0.3, 0.3, 0.39, 0.01, 0.0], dtype=torch.float64)
    out = project(p, c, fallback=q).probs
    assert abs(float(out.sum()) - 1) < 1e-12 and (out <= c + 1e-12).all()
    assert out[2] == pytest.approx(0.3)  # the likely token fills its cap first
    assert out[3] == pytest.approx(0.4)  # the rest follows q; the q = 0 token stays at 0
    assert out[4] == 0
    assert torch.equal(project(p, c, fallback=lambda: q).probs, out)  # lazily computed fallback


def test_caps_at_p_min_force_mass_elsewhere():
    v = 50
    p = torch.softmax(torch.randn(v, generator=torch.Generator().manual_seed(0)) * 3, -1)
    q = torch.zeros(v)
    q[p.topk(5).indices] = -1.0  # the five most likely tokens are dead ends
    c = caps_from_q(q, epsilon=0.1, p_min=1e-3)
    out = project_to_caps(p, c)
    assert torch.allclose(out[p.topk(5).indices], torch.full((5,), 1e-3))
    assert abs(float(out.sum()) - 1) < 1e-6


def test_batched_over_leading_dims_and_dtype():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(2, 3, 1000, generator=g) * 4, -1)
    c = torch.rand(2, 3, 1000, generator=g).clamp_min(1e-4)
    c[1, 2] = 1e-4  # one dead-end row
    proj = project(p, c)
    assert proj.probs.shape == p.shape and proj.probs.dtype == p.dtype
    assert proj.dead_end.shape == (2, 3) and bool(proj.dead_end[1, 2])
    for i in range(2):
        for j in range(3):
            assert torch.allclose(proj.probs[i, j], project_to_caps(p[i, j], c[i, j]), atol=1e-7)
    assert torch.allclose(proj.probs.sum(-1), torch.ones(2, 3), atol=1e-5)


def test_caps_from_q_modes():
    q = torch.tensor([-1.0, -0.5, 0.0])
    assert torch.allclose(caps_from_q(q, 0.1, p_min=0.01), torch.tensor([0.01, 0.4, 0.9]))
    assert torch.allclose(caps_from_q(q, 0.1, p_min=0.01, mode="normalized"), torch.tensor([0.01, 0.4 / 0.9, 1.0]))
    assert torch.allclose(caps_from_q(q, 0.1, p_min=0.01, p_max=0.5), torch.tensor([0.01, 0.4, 0.5]))
    with pytest.raises(ValueError, match="mode"):
        caps_from_q(q, 0.1, mode="nope")
    with pytest.raises(ValueError, match="p_min"):
        caps_from_q(q, 0.1, p_min=0.5, p_max=0.4)


@settings(max_examples=100, deadline=None)
@given(st.lists(problems(max_v=12, min_v=12), min_size=2, max_size=6), st.booleans())
def test_a_batch_solves_each_row_as_alone_and_keeps_rows_whose_caps_hold(rows, with_fallback):
    """Only the rows whose caps bind are solved; each row's answer is the one it gets projected alone."""
    p = torch.stack([r[0] for r in rows])
    c = torch.stack([r[1] for r in rows])
    c[0] = 1.0   # one row whose caps hold, so the batch mixes solved and untouched rows
    fb = torch.softmax(torch.linspace(0, 1, 12, dtype=torch.float64).expand_as(p), -1) if with_fallback else None
    got = project(p, c, fallback=fb)
    assert torch.equal(got.probs[0], project(p[:1], c[:1]).probs[0])   # untouched: the input, normalised
    for i in range(len(rows)):
        alone = project(p[i: i + 1], c[i: i + 1], fallback=None if fb is None else fb[i: i + 1])
        assert torch.allclose(got.probs[i], alone.probs[0], atol=1e-12, rtol=0)
        assert bool(got.dead_end[i]) == bool(alone.dead_end[0])
        assert bool(got.outside_support[i]) == bool(alone.outside_support[0])
