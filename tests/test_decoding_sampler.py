"""The rectified sampling loop: exact caps, left padding, caches, seeds, EOS, and the LogitsProcessor."""

from __future__ import annotations

import math

import pytest
import torch

from rectify.decoding import (
    DecodingConfig,
    RectifiedSampler,
    RectifyLogitsProcessor,
    VocabularyMismatch,
    caps_from_q,
    warp_logits,
)
from rectify.lm import load_lm
from rectify.value_model import ValueModel
from tests.conftest import tiny_lm_config
from tests.toy_models import constant_q_model, peaky, random_q_model

PROMPTS = ["Hello there, how are", "x", "The quick brown fox jumps over the lazy dog and"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops on a loaded 2-core machine run >10x faster on one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def family(request):
    return request.param


@pytest.fixture(scope="module")
def models(family):
    gen, tok = load_lm(tiny_lm_config(family))
    return peaky(gen), tok, random_q_model(family)


def sampler(models, **cfg) -> RectifiedSampler:
    gen, tok, vm = models
    return RectifiedSampler(gen, tok, vm, DecodingConfig(**({"max_new_tokens": 6, "epsilon": 0.9} | cfg)))


@pytest.mark.parametrize("rectify", [False, True])
def test_batched_equals_unbatched_greedy(models, rectify):
    s = sampler(models, rectify=rectify, do_sample=False)
    batched = s.generate(PROMPTS)
    for i, p in enumerate(PROMPTS):
        alone = s.generate([p])
        assert torch.equal(batched.sequences[i], alone.sequences[0]), (i, batched.texts[i], alone.texts[0])


def test_rectification_changes_greedy_output(models):
    plain = sampler(models, rectify=False, do_sample=False).generate(PROMPTS)
    rect = sampler(models, rectify=True, do_sample=False).generate(PROMPTS)
    assert not torch.equal(plain.sequences, rect.sequences)


def test_cached_equals_recompute_and_shared_equals_separate(models):
    cached = sampler(models, do_sample=False).generate(PROMPTS)
    recompute = sampler(models, do_sample=False, q_cache=False).generate(PROMPTS)
    assert torch.equal(cached.sequences, recompute.sequences)
    gen, tok, vm = models
    shared_vm = ValueModel.from_backbone(gen, {"bounded": True}, tok)
    shared_vm.head.load_state_dict(vm.head.state_dict())
    shared = RectifiedSampler(gen, tok, shared_vm, DecodingConfig(do_sample=False, max_new_tokens=6, epsilon=0.9))
    separate = RectifiedSampler(gen, tok, shared_vm, DecodingConfig(do_sample=False, max_new_tokens=6, epsilon=0.9,
                                                                    shared_backbone=False))
    assert shared.shared and not separate.shared
    assert torch.equal(shared.generate(PROMPTS).sequences, separate.generate(PROMPTS).sequences)


def test_seeded_sampling_is_per_row(models):
    s = sampler(models, num_return_sequences=2, top_k=20)
    a = s.generate(PROMPTS, seeds=[5, 6, 7])
    b = s.generate(PROMPTS[1:], seeds=[6, 7])
    assert torch.equal(a.sequences[2:], b.sequences)
    assert torch.equal(a.sequences, s.generate(PROMPTS, seeds=[5, 6, 7]).sequences)
    assert not torch.equal(a.sequences[0], a.sequences[1])  # two samples of one prompt differ
    assert len(a.texts) == 6 and a.row_steps > 0


def test_eos_and_min_new_tokens(models):
    gen, tok, vm = models
    cfg = DecodingConfig(rectify=False, top_k=50, max_new_tokens=5)
    ref = RectifiedSampler(gen, tok, vm, cfg).generate(PROMPTS, seeds=1)
    row = ref.sequences[0].tolist()
    # A token row 0 first emits at step j (prefer j >= 1 so the row has some output before stopping).
    j = next((j for j in range(1, len(row)) if row[j] not in row[:j]), 0)
    stop = row[j]  # ... becomes "EOS"
    out = RectifiedSampler(gen, tok, vm, cfg, eos_token_ids=[stop]).generate(PROMPTS, seeds=1)
    assert out.lengths[0] == j and out.sequences[0, :j].tolist() == row[:j]
    assert (out.sequences[0, j + 1:] == tok.pad_token_id).all()
    for i in (1, 2):  # other rows are unaffected unless they emit that token themselves
        if stop not in ref.sequences[i].tolist():
            assert torch.equal(out.sequences[i], ref.sequences[i])
    first = int(ref.sequences[0, 0])
    late = RectifiedSampler(gen, tok, vm, DecodingConfig(rectify=False, do_sample=False, max_new_tokens=5,
                                                         min_new_tokens=2), eos_token_ids=[first]).generate(PROMPTS)
    assert first not in late.sequences[0, :2].tolist()


def test_caps_hold_on_sampled_distribution(models):
    gen, tok, vm = models
    s = sampler(models, top_k=50, top_p=0.9, temperature=0.7)
    ids, mask = s.encode(PROMPTS)
    from rectify.decoding.forward import lm_step, q_step
    from rectify.lm import position_ids_from_mask

    pos = position_ids_from_mask(mask)
    logits, _, _ = lm_step(gen, ids, mask, pos)
    q, _ = q_step(vm, ids, mask, pos)
    probs, proj = s.distribution(logits, q)
    caps = caps_from_q(q[:, : len(tok)], 0.9, 1e-5)
    assert (probs <= caps + 1e-6).all() and torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    assert (probs.max(-1).values < torch.softmax(logits / 0.7, -1).max(-1).values).any()  # caps bind


def test_dead_ends_are_counted(family):
    gen, tok = load_lm(tiny_lm_config(family))
    vm = constant_q_model(family, torch.full((len(tok),), -1.0))
    res = RectifiedSampler(gen, tok, vm, DecodingConfig(max_new_tokens=3, p_min=1e-6)).generate(PROMPTS, seeds=0)
    assert res.dead_ends == res.row_steps > 0
    # Per row too (a report's prompt subsets): each row's steps are its tokens, plus the step that drew EOS.
    assert sum(res.dead_ends_per_row) == res.dead_ends and sum(res.steps_per_row) == res.row_steps
    eos = {int(tok.eos_token_id)}
    assert res.steps_per_row == [m + (m < 3 and int(s[m]) in eos) for s, m in zip(res.sequences, res.lengths, strict=True)]
    plain = RectifiedSampler(gen, tok, None, DecodingConfig(rectify=False, max_new_tokens=3)).generate(PROMPTS)
    assert plain.dead_ends_per_row == plain.steps_per_row == []


def test_vocabulary_mismatch_is_refused():
    gen, tok = load_lm(tiny_lm_config("gpt2"))
    with pytest.raises(VocabularyMismatch, match="shared tokens have other ids"):
        RectifiedSampler(gen, tok, random_q_model("llama"), DecodingConfig())


def test_a_vocabulary_with_one_added_token_is_refused_naming_it():
    """A saved GPT-2 tokenizer with a pad token added (50258 tokens) against a GPT-2 Q_D: the message names the
    one extra token, not "different ids"."""
    import copy

    gen, tok = load_lm(tiny_lm_config("gpt2"))
    padded = copy.deepcopy(tok)
    padded.add_special_tokens({"pad_token": "<pad>"})
    with pytest.raises(VocabularyMismatch, match=r"1 tokens only the first has: '<pad>' \(id 50257\)\)") as err:
        RectifiedSampler(gen, padded, random_q_model("gpt2"), DecodingConfig())
    assert "other ids" not in str(err.value)


@pytest.mark.parametrize("warp", [{}, {"top_k": 3}, {"top_p": 0.5}])
def test_forbidden_token_frequency_matches_cap(warp):
    """Sample the first token many times: a capped token appears at its cap's rate, within noise."""
    gen, tok = load_lm(tiny_lm_config("gpt2"))
    with torch.no_grad():
        gen.get_output_embeddings().weight.mul_(16)  # the top token gets most of the mass
    prompt = "Hello there, how are"
    plain = RectifiedSampler(gen, tok, None, DecodingConfig(rectify=False, do_sample=False, max_new_tokens=1))
    top = int(plain.generate([prompt]).sequences[0, 0])
    cap, eps = 0.2, 0.1
    q = torch.zeros(len(tok))
    q[top] = cap - 1 + eps  # cap(top) = 1 + q - eps = 0.2; every other cap is 0.9
    vm = constant_q_model("gpt2", q)
    rows = 200
    cfg = DecodingConfig(max_new_tokens=1, num_return_sequences=rows, epsilon=eps, **warp)
    got = RectifiedSampler(gen, tok, vm, cfg).generate([prompt], seeds=[0]).sequences[:, 0]
    sd = (cap * (1 - cap) / rows) ** 0.5
    assert abs(float((got == top).float().mean()) - cap) < 4 * sd
    cfg = DecodingConfig(rectify=False, max_new_tokens=1, num_return_sequences=100, **warp)
    plain_got = RectifiedSampler(gen, tok, None, cfg).generate([prompt], seeds=[0]).sequences[:, 0]
    assert float((plain_got == top).float().mean()) > 0.5  # without rectification it dominates


def test_logits_processor_matches_loop_and_caps_hold():
    gen, tok = load_lm(tiny_lm_config("llama"))
    gen = peaky(gen)
    vm = random_q_model("llama")
    loop = RectifiedSampler(gen, tok, vm, DecodingConfig(do_sample=False, max_new_tokens=5, epsilon=0.9))
    expected = loop.generate(PROMPTS)
    ids, mask = loop.encode(PROMPTS)
    proc = RectifyLogitsProcessor(vm, epsilon=0.9, attention_mask=mask)
    out = gen.generate(input_ids=ids, attention_mask=mask, logits_processor=[proc], **proc.generate_kwargs(False),
                       max_new_tokens=5, min_new_tokens=0, pad_token_id=tok.pad_token_id)
    new = out[:, ids.shape[1]:]
    for i in range(len(PROMPTS)):
        n = expected.lengths[i]
        assert new[i, :n].tolist() == expected.sequences[i, :n].tolist()
    # The processor's output is log of a distribution under the caps, with warping done inside it.
    scores = gen(input_ids=ids, attention_mask=mask).logits[:, -1]
    q = -0.5 * torch.rand(len(tok), generator=torch.Generator().manual_seed(0))
    q[scores.argmax(-1)] = -0.85  # each row's top token gets cap 0.05
    vm = constant_q_model("llama", q)
    proc2 = RectifyLogitsProcessor(vm, epsilon=0.1, top_k=10, attention_mask=mask)
    logp = proc2(ids, scores)
    caps = caps_from_q(q, 0.1, 1e-5)
    p = logp.exp()
    assert (p <= caps + 1e-6).all() and torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)
    assert proc2.outside_support == 0 and ((p > 0).sum(-1) <= 10).all()
    top = torch.softmax(warp_logits(scores, 1.0, 10), -1).max(-1).values
    assert (top > 0.05 + 1e-3).all() and torch.allclose(p.max(-1).values.clamp_max(0.05), torch.full((3,), 0.05))


def test_logits_processor_refuses_right_padded_prompts(smollm2_tok):
    """A right-padded batch would put pads between a prompt and its continuation in what Q_D reads."""
    vm = random_q_model("llama")
    right = smollm2_tok(PROMPTS, return_tensors="pt", padding=True, padding_side="right").attention_mask
    left = smollm2_tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left").attention_mask
    assert not bool(right.all())  # the prompts differ in length
    with pytest.raises(ValueError, match="padding_side='left'"):
        RectifyLogitsProcessor(vm, attention_mask=right)
    RectifyLogitsProcessor(vm, attention_mask=left)


def test_larger_bf16_generator_with_float32_q_model():
    """The generator may differ from Q_D in size and dtype; only the vocabulary must match."""
    gen, tok = load_lm(tiny_lm_config("gpt2", num_layers=3, hidden_size=96, num_heads=4))
    gen = peaky(gen).to(torch.bfloat16)
    vm = random_q_model("gpt2")
    s = RectifiedSampler(gen, tok, vm, DecodingConfig(max_new_tokens=3, epsilon=0.9, num_return_sequences=2))
    res = s.generate(PROMPTS, seeds=0)
    assert res.sequences.shape == (6, 3) and not s.shared
    with pytest.raises(ValueError, match="not the generator"):
        RectifiedSampler(gen, tok, vm, DecodingConfig(shared_backbone=True))


def test_policy_baseline_caps_hold_on_sampled_distribution(models):
    """q_baseline / q_scale reach the loop: the sampled distribution obeys the transformed caps."""
    gen, tok, vm = models
    s = sampler(models, cap_mode="normalized", q_baseline="policy", q_scale=20.0, epsilon=0.3)
    ids, mask = s.encode(PROMPTS)
    from rectify.decoding.forward import lm_step, q_step
    from rectify.lm import position_ids_from_mask

    pos = position_ids_from_mask(mask)
    logits, _, _ = lm_step(gen, ids, mask, pos)
    q, _ = q_step(vm, ids, mask, pos)
    plain = torch.softmax(logits[:, : len(tok)], -1)
    probs, _ = s.distribution(logits, q)
    caps = caps_from_q(q[:, : len(tok)], 0.3, 1e-5, mode="normalized", q_scale=20.0, q_baseline="policy", probs=plain)
    assert (probs <= caps + 1e-6).all() and torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(probs, plain, atol=1e-4)  # the caps bind somewhere


def test_logits_processor_with_a_stop_neutral_tilt_matches_the_loop():
    """The processor's tilt keeps P(EOS) (Q_D's tokenizer gives the stop id) and equals the sampler's step."""
    gen, tok = load_lm(tiny_lm_config("llama"))
    q = torch.full((len(tok),), -0.3)
    q[tok.eos_token_id] = 0.0   # stopping rated safe, everything else risky
    vm = constant_q_model("llama", q)
    loop = RectifiedSampler(gen, tok, vm, DecodingConfig(tilt=16.0, epsilon=0.0))
    ids, mask = loop.encode(PROMPTS)
    scores = gen(input_ids=ids, attention_mask=mask).logits[:, -1, : len(tok)].detach()
    scores[:, tok.eos_token_id] = scores.max(-1).values   # a stop worth watching
    lm_eos = torch.softmax(scores, -1)[:, tok.eos_token_id]
    p = RectifyLogitsProcessor(vm, epsilon=0.0, tilt=16.0, attention_mask=mask)(ids, scores).exp()
    assert torch.allclose(p[:, tok.eos_token_id], lm_eos, atol=1e-6)
    qh = vm.hidden_states(ids, mask)[0][:, -1]
    step, _, _ = loop.step_distribution(scores, qh, {})
    assert torch.allclose(p, step, atol=1e-6)
    tilted = RectifyLogitsProcessor(vm, epsilon=0.0, tilt=16.0, stop_neutral=False, attention_mask=mask)(ids, scores)
    assert bool((tilted.exp()[:, tok.eos_token_id] > 10 * lm_eos).all())


def test_logits_processor_on_a_generator_with_a_padded_embedding():
    """Many models pad their embedding past the tokenizer (49216 rows for 49152 tokens): told the generator's
    tokenizer, the processor rectifies the real vocabulary and gives the padding probability 0, as the sampler
    does; not told, it refuses rather than guess that the extra scores are padding."""
    gen, tok = load_lm(tiny_lm_config("llama"))
    q = torch.full((len(tok),), -0.3)
    vm = constant_q_model("llama", q)
    ids, mask = RectifiedSampler(gen, tok, vm, DecodingConfig(epsilon=0.5)).encode(PROMPTS)
    scores = gen(input_ids=ids, attention_mask=mask).logits[:, -1, : len(tok)].detach()
    padded = torch.cat([scores, torch.full((len(PROMPTS), 64), 50.0)], -1)   # padding with the largest scores
    want = RectifyLogitsProcessor(vm, epsilon=0.5, attention_mask=mask)(ids, scores)
    got = RectifyLogitsProcessor(vm, epsilon=0.5, attention_mask=mask, tokenizer=tok)(ids, padded)
    assert got.shape == padded.shape and torch.equal(got[:, len(tok):], torch.full((len(PROMPTS), 64), -math.inf))
    assert torch.allclose(got[:, : len(tok)], want)
    with pytest.raises(ValueError, match="pass tokenizer="):
        RectifyLogitsProcessor(vm, epsilon=0.5, attention_mask=mask)(ids, padded)
