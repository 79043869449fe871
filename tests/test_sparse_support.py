"""Sparse support (Q_D's head on the kept tokens only) and EOS compaction give the full loop's answers."""

from __future__ import annotations

import pytest
import torch

from rectify.decoding import DecodingConfig, RectifiedSampler
from rectify.decoding.forward import lm_step, q_hidden_step
from rectify.decoding.support import support_of
from rectify.decoding.warping import warp_logits
from rectify.lm import load_lm, position_ids_from_mask
from tests.conftest import tiny_lm_config
from tests.test_decoding_sampler import one_thread  # noqa: F401 - autouse: one intra-op thread
from tests.toy_models import constant_q_model, peaky, random_q_model

PROMPTS = ["Hello there, how are", "x", "The quick brown fox jumps over the lazy dog and"]


@pytest.fixture(scope="module")
def models():
    gen, tok = load_lm(tiny_lm_config("llama"))
    return peaky(gen), tok, random_q_model("llama")


def _step(s: RectifiedSampler, gen, vm):
    ids, mask = s.encode(PROMPTS)
    pos = position_ids_from_mask(mask)
    logits, _, _ = lm_step(gen, ids, mask, pos)
    qh, _ = q_hidden_step(vm, ids, mask, pos)
    return logits, qh


@pytest.mark.parametrize("trunc", [{"top_k": 50}, {"top_p": 0.9}, {"top_k": 20, "top_p": 0.8}])
def test_sparse_equals_full_head(models, trunc):
    gen, tok, vm = models
    cfg = {"epsilon": 0.9, "max_new_tokens": 6, **trunc}
    sparse = RectifiedSampler(gen, tok, vm, DecodingConfig(**cfg))
    full = RectifiedSampler(gen, tok, vm, DecodingConfig(sparse_support=False, **cfg))
    assert sparse.sparse and not full.sparse
    logits, qh = _step(sparse, gen, vm)
    p_sparse, proj, sup = sparse.step_distribution(logits, qh, {})
    p_full, _, _ = full.step_distribution(logits, qh, {})
    assert torch.allclose(p_sparse, p_full, atol=1e-6, rtol=0)  # the same distribution on the support ...
    outside = torch.ones_like(p_sparse, dtype=torch.bool).scatter(-1, sup.index, ~sup.valid)
    regular = ~(proj.dead_end | proj.outside_support)  # (those rows move mass off the support, as the full head)
    assert (p_sparse[regular][outside[regular]] == 0).all()  # ... and zero elsewhere
    greedy = [RectifiedSampler(gen, tok, vm, DecodingConfig(do_sample=False, sparse_support=sp, **cfg))
              for sp in (True, False)]
    assert torch.equal(greedy[0].generate(PROMPTS).sequences, greedy[1].generate(PROMPTS).sequences)
    assert torch.equal(sparse.generate(PROMPTS, seeds=3).sequences, full.generate(PROMPTS, seeds=3).sequences)


def test_dead_end_support_falls_back_to_the_full_head():
    """Kept tokens whose caps sum below one: the row is redone on the full head (exact, and counted)."""
    gen, tok = load_lm(tiny_lm_config("llama"))
    vm = constant_q_model("llama", torch.full((len(tok),), -1.0))
    cfg = {"top_k": 5, "max_new_tokens": 3, "p_min": 1e-6}
    sparse = RectifiedSampler(gen, tok, vm, DecodingConfig(**cfg))
    full = RectifiedSampler(gen, tok, vm, DecodingConfig(sparse_support=False, **cfg))
    a, b = sparse.generate(PROMPTS, seeds=0), full.generate(PROMPTS, seeds=0)
    assert torch.equal(a.sequences, b.sequences) and a.dead_ends == b.dead_ends == a.row_steps
    assert a.stats["full_head_rows"] == a.row_steps


def test_support_mass_rectifies_the_kept_set_and_counts_the_rest(models):
    gen, tok, vm = models
    s = RectifiedSampler(gen, tok, vm, DecodingConfig(epsilon=0.9, support_mass=0.9, max_new_tokens=4))
    logits, qh = _step(s, gen, vm)
    plain = torch.softmax(logits[:, : len(tok)].float(), -1)
    probs, _, sup = s.step_distribution(logits[:, : len(tok)], qh, {})
    kept = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, sup.index, sup.valid)
    assert (plain * kept).sum(-1).min() >= 0.9 - 1e-6  # the kept set holds the mass asked for
    assert torch.equal(probs[~kept], plain[~kept])  # the rest keeps the LM's own probabilities
    caps = s.cap_rule.compute(vm.q_values(qh).float()[:, : len(tok)])
    assert (probs[kept] <= caps[kept] + 1e-6).all() and torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    res = s.generate(PROMPTS, seeds=0)
    assert 0 <= res.stats.get("unrectified_steps", 0) <= res.row_steps


def test_support_of_smallest_set():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.97, 0.01, 0.01, 0.01]])
    sup = support_of(p, 0.8)
    assert sup.index[0, sup.valid[0]].tolist() == [0, 1] and sup.index[1, sup.valid[1]].tolist() == [0]
    assert support_of(torch.tensor([[0.0, 0.6, 0.4]])).valid.sum() == 2


def test_eos_compaction_keeps_rows_independent(models):
    """Rows that stop early leave the batch; the others sample exactly what they sample alone."""
    gen, tok, vm = models
    for rectify in (False, True):
        probe = RectifiedSampler(gen, tok, vm, DecodingConfig(rectify=rectify, epsilon=0.9, max_new_tokens=6,
                                                              num_return_sequences=2))
        ref = probe.generate(PROMPTS, seeds=[4, 5, 6])
        stop = int(ref.sequences[2, 1])  # a token some row emits early becomes EOS
        s = RectifiedSampler(gen, tok, vm, probe.cfg, eos_token_ids=[stop])
        batched = s.generate(PROMPTS, seeds=[4, 5, 6])
        assert min(batched.lengths) < 6
        for i, p in enumerate(PROMPTS):
            alone = s.generate([p], seeds=[4 + i])
            assert torch.equal(batched.sequences[2 * i: 2 * i + 2], alone.sequences)


@pytest.mark.parametrize("trunc", [{}, {"top_k": 40}, {"top_p": 0.95}])
def test_a_stop_neutral_tilt_leaves_the_lm_probability_of_stopping(trunc):
    """Q_D rates stopping safe (Q 0) and every other token risky: a plain tilt piles mass on EOS, a stop-neutral
    one (the default) keeps the LM's own P(EOS), on the full head and on the sparse support alike."""
    gen, tok = load_lm(tiny_lm_config("llama"))
    q = torch.full((len(tok),), -0.3)
    q[tok.eos_token_id] = 0.0
    vm = constant_q_model("llama", q)
    cfg = {"tilt": 16.0, "epsilon": 0.0, "max_new_tokens": 3, **trunc}
    samplers = {neutral: RectifiedSampler(gen, tok, vm, DecodingConfig(stop_neutral=neutral, **cfg))
                for neutral in (True, False)}
    with torch.inference_mode():
        logits, qh = _step(samplers[True], gen, vm)
        logits = logits[:, : len(tok)].clone()
        logits[:, tok.eos_token_id] = logits.topk(5).values[:, -1]   # EOS in every support, not on top
        lm = torch.softmax(warp_logits(logits, 1.0, cfg.get("top_k", 0), cfg.get("top_p", 1.0)), -1)
        for neutral, s in samplers.items():
            probs, _, _ = s.step_distribution(logits, qh, {})
            eos = probs[:, tok.eos_token_id]
            if neutral:
                assert torch.allclose(eos, lm[:, tok.eos_token_id], atol=1e-6)
            else:
                assert bool((eos > 10 * lm[:, tok.eos_token_id]).all())
            assert torch.allclose(probs.sum(-1), torch.ones(len(PROMPTS)), atol=1e-5)
