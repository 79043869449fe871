"""Off-policy estimates of cap rules: step alignment against the sampler, and the weighting arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rectify.analysis.offpolicy import (
    Trajectory,
    estimate,
    from_generations,
    log_ratios,
    q_anatomy,
    rule_grid,
    summarize,
)
from rectify.decoding import CapConfig, DecodingConfig, RectifiedSampler
from rectify.lm import load_lm
from tests.conftest import tiny_lm_config
from tests.toy_models import constant_q_model, peaky, random_q_model


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    gen, tok = load_lm(tiny_lm_config("gpt2"))
    return peaky(gen), tok, random_q_model("gpt2")


def _by_hand(gen, tok, vm, traj: Trajectory, rule: CapConfig) -> float:
    """Sum over continuation steps of log p'(a) - log p(a), one prefix at a time through the sampler."""
    sampler = RectifiedSampler(gen, tok, vm, DecodingConfig(epsilon=rule.epsilon, cap_mode=rule.mode,
                                                            q_scale=rule.q_scale, q_baseline=rule.q_baseline,
                                                            p_min=rule.p_min))
    total = 0.0
    for j in range(traj.prompt_len, len(traj.ids)):
        prefix = torch.tensor([traj.ids[:j]])
        logits = gen(input_ids=prefix).logits[:, -1]
        q = vm(prefix)[:, -1]
        rectified, _ = sampler.distribution(logits, q)
        a = traj.ids[j]
        total += math.log(float(rectified[0, a])) - float(torch.log_softmax(logits, -1)[0, a])
    return total


def test_log_ratios_match_the_sampler_step_by_step(models):
    gen, tok, vm = models
    trajs = [Trajectory(tok("Hello there, how are you")["input_ids"], 3, True),
             Trajectory(tok("x y")["input_ids"], 1, False)]  # shorter: padded in the batch
    rules = [CapConfig(epsilon=0.6), CapConfig(epsilon=0.3, mode="normalized", q_baseline="policy", q_scale=5.0)]
    with torch.inference_mode():
        got = log_ratios(gen, vm, trajs, rules, batch_size=2, progress=False)
        for r, rule in enumerate(rules):
            for i, traj in enumerate(trajs):
                assert got.log_w[r, i] == pytest.approx(_by_hand(gen, tok, vm, traj, rule), abs=1e-4)
    assert got.n_tokens.tolist() == [len(trajs[0].ids) - 3, len(trajs[1].ids) - 1]
    assert (got.log_w != 0).any()
    for i, traj in enumerate(trajs):  # the last action's advantage and safer mass, one prefix by hand
        prefix = torch.tensor([traj.ids[:-1]])
        with torch.inference_mode():
            p = torch.softmax(gen(input_ids=prefix).logits[0, -1].float(), -1)
            q = vm(prefix)[0, -1].float()[: p.shape[-1]]
        taken = q[traj.ids[-1]]
        assert got.last_advantage[i] == pytest.approx(float(taken - (p * q).sum()), abs=1e-5)
        assert got.last_safer_mass[i] == pytest.approx(float(p[q > taken].sum()), abs=1e-5)


def test_a_rule_that_never_binds_has_zero_log_ratio():
    gen, tok = load_lm(tiny_lm_config("gpt2"))
    vm = constant_q_model("gpt2", torch.zeros(len(tok)))
    trajs = [Trajectory(tok("one two three four")["input_ids"], 2, False)]
    got = log_ratios(gen.eval(), vm, trajs, [CapConfig(epsilon=0.0)], progress=False)
    assert np.allclose(got.log_w, 0.0, atol=1e-5) and got.nll[0] > 0
    assert got.q_state[0] == pytest.approx(0.0, abs=1e-6) and got.q_spread[0] == pytest.approx(0.0, abs=1e-6)


def test_estimate_weights_by_hand():
    est = estimate(np.array([0.0, math.log(3.0)]), np.array([True, False]), np.array([2.0, 4.0]), np.array([1, 2]))
    assert est["toxic_rate"] == pytest.approx(0.25)
    assert est["nll_per_token"] == pytest.approx((2 + 3 * 4) / (1 + 3 * 2))
    assert est["ess"] == pytest.approx(16 / 10)


def test_summarize_and_grid():
    rules = rule_grid({"epsilon": [0.1, 0.5], "q_scale": [1.0, 2.0]})
    assert len(rules) == 4 and {r.epsilon for r in rules} == {0.1, 0.5}
    union = rule_grid([{"epsilon": [0.3]}, {"epsilon": [0.1, 0.2], "q_scale": [4.0]}])
    assert [(r.epsilon, r.q_scale) for r in union] == [(0.3, 1.0), (0.1, 4.0), (0.2, 4.0)]
    with pytest.raises(ValueError, match="unknown cap fields"):
        rule_grid({"epsilonn": [0.1]})
    # decoding's name for the cap rule (decoding.cap_mode) means CapConfig's mode
    assert [r.mode for r in rule_grid({"cap_mode": ["original", "normalized"]})] == ["original", "normalized"]
    from rectify.analysis.offpolicy import describe

    assert [describe(r) for r in rule_grid({"tilt": [0.0, 64.0], "epsilon": [0.05]})] == [
        "eps=0.05 original", "tilt=64 eps=0.05 original"]   # two rules, two labels
    from rectify.analysis.offpolicy import LogRatios

    ratios = LogRatios(log_w=np.array([[0.0, 0.0], [-5.0, 0.0], [0, 0], [0, 0]]), nll=np.array([1.0, 1.0]),
                       n_tokens=np.array([1, 1]), toxic=np.array([True, False]), q_state=np.array([-0.5, -0.1]),
                       q_spread=np.array([0.2, 0.0]), last_advantage=np.array([-0.3, 0.1]),
                       last_safer_mass=np.array([0.9, 0.2]))
    rows = summarize(ratios, rules)
    assert rows[0]["rule"] == "plain" and rows[0]["toxic_rate"] == pytest.approx(0.5)
    assert rows[2]["toxic_cut"] > 0.9 and rows[1]["toxic_cut"] == pytest.approx(0.0)
    assert q_anatomy(ratios) == {"q_state_toxic": -0.5, "q_spread_toxic": 0.2, "q_state_clean": -0.1,
                                 "q_spread_clean": 0.0, "last_advantage_toxic": -0.3, "last_advantage_clean": 0.1,
                                 "last_safer_mass_toxic": 0.9, "last_safer_mass_clean": 0.2, "last_advantage_auc": 1.0}


def test_from_generations_splits_prompt_and_continuation(gpt2_tok):
    trajs = from_generations(["Hello", "Hi"], [" world", ""], [0.7, 0.1], gpt2_tok)
    assert len(trajs) == 1  # the empty continuation has no step
    assert trajs[0].prompt_len == len(gpt2_tok("Hello")["input_ids"]) and trajs[0].toxic
