"""Continuation perplexity under a judge LM: hand computation, padding invariance, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rectify.evaluation import continuation_nll, mean_generation_perplexity, token_perplexity


def _hand_nll(model, tok, prompt: str, continuation: str) -> tuple[float, int]:
    """NLL of the continuation's tokens, by hand: tokenise both parts, run the full sequence once."""
    p_ids = tok(prompt)["input_ids"]
    full = tok(prompt + continuation)["input_ids"]
    assert full[: len(p_ids)] == p_ids  # these examples split cleanly at a token boundary
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([full])).logits[0].double(), -1)
    nll = -sum(logp[t - 1, full[t]].item() for t in range(len(p_ids), len(full)))
    return nll, len(full) - len(p_ids)


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
@pytest.mark.parametrize("head_only", [True, False])
def test_matches_hand_computation(fixture, head_only, request):
    model, tok = request.getfixturevalue(fixture)
    prompt, cont = "The weather today is", " sunny and warm."
    res = continuation_nll(model, tok, [prompt], [cont], progress=False, head_only=head_only)
    nll, n = _hand_nll(model, tok, prompt, cont)
    assert res.n_tokens.tolist() == [n] and n == len(tok(cont)["input_ids"])
    assert res.nll_sum[0] == pytest.approx(nll, rel=1e-5)
    # Only the continuation is scored: a different prompt token count changes nothing about n.
    assert token_perplexity(res.nll_sum, res.n_tokens) == pytest.approx(math.exp(nll / n), rel=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_batched_equals_one_by_one(fixture, request):
    model, tok = request.getfixturevalue(fixture)
    prompts = ["Hi", "A much longer prompt that takes many more tokens than the others", "Why", ""]
    conts = [" there, friend", " ok", " would you say that about my work and my family?", "Start of text"]
    batched = continuation_nll(model, tok, prompts, conts, batch_size=4, progress=False)
    full_forward = continuation_nll(model, tok, prompts, conts, batch_size=4, progress=False, head_only=False)
    np.testing.assert_allclose(full_forward.nll_sum, batched.nll_sum, rtol=1e-4, atol=1e-4)
    single = [continuation_nll(model, tok, [p], [c], batch_size=1, progress=False) for p, c in zip(prompts, conts, strict=True)]
    np.testing.assert_allclose(batched.nll_sum, [s.nll_sum[0] for s in single], rtol=1e-4, atol=1e-4)
    assert batched.n_tokens.tolist() == [int(s.n_tokens[0]) for s in single]
    # Order within the batch does not matter either.
    rev = continuation_nll(model, tok, prompts[::-1], conts[::-1], batch_size=3, progress=False)
    np.testing.assert_allclose(rev.nll_sum[::-1], batched.nll_sum, rtol=1e-4, atol=1e-4)


def test_boundary_and_empty_cases(tiny_gpt2):
    model, tok = tiny_gpt2
    res = continuation_nll(model, tok, ["Hello ", "Hello", "", "Hello"], ["world", "", "Hello world", " world"],
                           progress=False)
    # "Hello " + "world" tokenises as ["Hello", " world"]: the straddling " world" belongs to the continuation.
    assert res.n_tokens[0] == 1
    assert res.nll_sum[0] == pytest.approx(res.nll_sum[3], rel=1e-5)
    # An empty continuation has nothing to score.
    assert res.n_tokens[1] == 0 and res.nll_sum[1] == 0
    # Without a prompt (and GPT-2 adds no BOS) the first token has no context and is skipped.
    assert res.n_tokens[2] == len(tok("Hello world")["input_ids"]) - 1
    assert math.isnan(token_perplexity(np.zeros(1), np.zeros(1, dtype=int)))


def test_truncation_keeps_the_continuation(tiny_gpt2):
    model, tok = tiny_gpt2
    long_prompt = " ".join(["word"] * 300)
    res = continuation_nll(model, tok, [long_prompt], [" the end"], max_length=32, progress=False)
    assert res.n_tokens[0] == len(tok(" the end")["input_ids"])
    assert np.isfinite(res.nll_sum[0]) and res.nll_sum[0] > 0


def test_mean_generation_perplexity():
    nll = np.array([2.0, 0.0, 6.0])
    tok = np.array([1, 0, 2])
    assert mean_generation_perplexity(nll, tok) == pytest.approx((math.exp(2) + math.exp(3)) / 2)
    assert token_perplexity(nll, tok) == pytest.approx(math.exp(8 / 3))


def test_rejects_mismatched_inputs(tiny_gpt2):
    model, tok = tiny_gpt2
    with pytest.raises(ValueError):
        continuation_nll(model, tok, ["a"], ["b", "c"])
