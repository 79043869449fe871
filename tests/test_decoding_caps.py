"""The Q transforms in front of the security condition (q_baseline, q_scale) and their invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.decoding import CapConfig, caps_from_q, project

q_vectors = st.lists(st.floats(-1.0, 0.0), min_size=2, max_size=8)


def _probs(v: int, seed: int) -> torch.Tensor:
    return torch.softmax(torch.randn(v, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2, -1)


def test_defaults_are_the_paper_rule():
    q = torch.tensor([-0.9, -0.3, 0.0])
    assert CapConfig().is_paper_rule
    assert torch.allclose(CapConfig(epsilon=0.2, p_min=0.01).compute(q), (1 + q - 0.2).clamp(0.01, 1))


def test_scale_and_policy_baseline_by_hand():
    q = torch.tensor([-0.3, -0.1, 0.0])
    # scale 2: Q -> [-0.6, -0.2, 0]; original rule with epsilon 0.1
    assert torch.allclose(caps_from_q(q, 0.1, q_scale=2.0), torch.tensor([0.3, 0.7, 0.9]))
    # scale 5 clips at -1: the first token sits at p_min
    assert torch.allclose(caps_from_q(q, 0.1, p_min=0.01, q_scale=5.0), torch.tensor([0.01, 0.4, 0.9]))
    p = torch.tensor([0.0, 0.5, 0.5])  # the LM's expected Q is -0.05
    caps = caps_from_q(q, 0.5, mode="normalized", q_baseline="policy", probs=p)
    assert torch.allclose(caps, torch.tensor([(0.5 - 0.25) / 0.5, (0.5 - 0.05) / 0.5, 1.0]))


def test_policy_baseline_needs_probs_and_bad_values_are_rejected():
    with pytest.raises(ValueError, match="probabilities"):
        caps_from_q(torch.zeros(3), 0.1, q_baseline="policy")
    with pytest.raises(ValueError, match="q_baseline"):
        CapConfig(q_baseline="max")
    with pytest.raises(ValueError, match="q_scale"):
        CapConfig(q_scale=0.0)
    with pytest.raises(ValueError, match=r"decoding.epsilon must be in \[0, 1\], got -1"):
        CapConfig(epsilon=-1.0)   # every cap would be >= 1: rectification silently off
    with pytest.raises(ValueError, match="decoding.tilt must be >= 0"):
        CapConfig(tilt=-5.0)


@settings(max_examples=60, deadline=None)
@given(q=q_vectors, shift=st.floats(-0.5, 0.5), eps=st.floats(0.0, 0.9), seed=st.integers(0, 100))
def test_policy_baseline_ignores_a_state_level_shift(q, shift, eps, seed):
    """A risk shared by every token of a state (V(s)) does not change the caps under q_baseline=policy."""
    qt = torch.tensor(q, dtype=torch.float64)
    p = _probs(len(q), seed)
    rule = CapConfig(epsilon=eps, mode="normalized", q_baseline="policy", q_scale=3.0)
    assert torch.allclose(rule.compute(qt, p), rule.compute(qt + shift, p), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(q=q_vectors, eps=st.floats(0.0, 0.9), scale=st.floats(1.0, 10.0), seed=st.integers(0, 100))
def test_scaling_is_stricter_and_projection_respects_the_caps(q, eps, scale, seed):
    qt = torch.tensor(q, dtype=torch.float64)
    paper = caps_from_q(qt, eps)
    scaled = caps_from_q(qt, eps, q_scale=scale)
    assert bool((scaled <= paper + 1e-12).all())
    p = _probs(len(q), seed)
    for rule in (CapConfig(epsilon=eps, q_scale=scale), CapConfig(epsilon=eps, q_scale=scale, q_baseline="policy")):
        caps = rule.compute(qt, p)
        assert bool(((caps >= rule.p_min - 1e-12) & (caps <= rule.p_max + 1e-12)).all())
        proj = project(p, caps)
        if not bool(proj.dead_end):
            assert bool((proj.probs <= caps + 1e-9).all())


def test_tilt_one_conditions_on_a_clean_ending_exactly():
    """Two steps, exact Q of the LM itself: tilt 1 gives P(trajectory | clean ending)."""
    import itertools

    from rectify.decoding.caps import CapConfig

    rule = CapConfig(epsilon=0.0, p_min=1e-12, tilt=1.0)
    p0 = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)  # first token
    p1 = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)  # second token given the first
    toxic = torch.tensor([[0, 1], [1, 1], [0, 0]], dtype=torch.float64)  # ending toxic?
    q1 = -toxic  # Q after the first token is exact at the last step
    q0 = -(p1 * toxic).sum(-1)  # Q(s0, a) = -P(toxic | a) under the LM
    first = rule.reweight(q0, p0)
    joint = {}
    for a, b in itertools.product(range(3), range(2)):
        joint[a, b] = float(first[a] * rule.reweight(q1[a], p1[a])[b])
    clean = {(a, b): float(p0[a] * p1[a, b]) for a, b in joint if toxic[a, b] == 0}
    z = sum(clean.values())
    for (a, b), v in joint.items():
        assert v == pytest.approx(clean.get((a, b), 0.0) / z, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.floats(0.0, 6.0), st.integers(0, 10_000))
def test_tilt_keeps_a_distribution_and_never_raises_a_riskier_token_relative_to_a_safer(v, tilt, seed):
    from rectify.decoding.caps import CapConfig

    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(v, generator=g), -1)
    q = -torch.rand(v, generator=g)
    out = CapConfig(tilt=tilt).reweight(q, probs)
    assert torch.isclose(out.sum(), torch.tensor(1.0), atol=1e-5) and bool((out >= 0).all())
    ratio = out / probs  # a token's change factor: larger for safer tokens (higher Q)
    order = q.argsort()
    assert bool((ratio[order][1:] >= ratio[order][:-1] - 1e-6).all())
    if tilt == 0:
        assert torch.equal(out, probs)


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 40), st.floats(0.5, 128.0), st.integers(0, 10_000), st.integers(1, 2))
def test_a_stop_neutral_tilt_keeps_the_stop_probability_and_tilts_only_the_rest(v, tilt, seed, n_stop):
    """Q_D never sees the stop token in training, so a stop-neutral tilt leaves P(stop) as the LM has it and shares
    the rest of the mass out as the plain tilt would among the other tokens."""
    from rectify.decoding.caps import CapConfig

    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(2, v, generator=g) * 2, -1)
    q = -torch.rand(2, v, generator=g) * 0.3
    stop = torch.zeros(v, dtype=torch.bool)
    stop[:n_stop] = True
    out = CapConfig(tilt=tilt, stop_neutral=True).reweight(q, probs, stop=stop)
    assert torch.allclose(out.sum(-1), torch.ones(2), atol=1e-5) and bool((out >= 0).all())
    assert torch.allclose(out[:, stop], probs[:, stop], atol=1e-7)
    plain = CapConfig(tilt=tilt).reweight(q[:, ~stop], probs[:, ~stop] / probs[:, ~stop].sum(-1, keepdim=True))
    rest = out[:, ~stop] / out[:, ~stop].sum(-1, keepdim=True)
    assert torch.allclose(rest, plain, atol=1e-5)


def test_a_stop_neutral_tilt_needs_the_stop_tokens():
    from rectify.decoding.caps import CapConfig

    with pytest.raises(ValueError, match="stop"):
        CapConfig(tilt=8.0, stop_neutral=True).reweight(-torch.rand(1, 5), torch.full((1, 5), 0.2))
    probs = torch.full((1, 5), 0.2)
    assert torch.equal(CapConfig(tilt=0.0, stop_neutral=True).reweight(-torch.rand(1, 5), probs), probs)
