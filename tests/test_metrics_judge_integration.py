"""The real fluency judge (bundled Gemma-3-270m): sane perplexities, batch invariance. Integration only."""

from __future__ import annotations

import numpy as np
import pytest

from rectify.evaluation import continuation_nll, token_perplexity
from rectify.lm import load_lm

pytestmark = pytest.mark.integration


def test_gemma_judge_prefers_fluent_text():
    model, tok = load_lm({"source": "gemma3"})
    prompts = ["The weather today is", "My favourite food is", "She opened the door and"]
    fluent = [" sunny and warm, perfect for a walk.", " pizza with extra cheese.", " walked into the room."]
    garbled = [" door the walk sunny for, perfect warm.", " cheese extra pizza with is.", " room the into walked."]
    a = continuation_nll(model.eval(), tok, prompts, fluent, batch_size=3, progress=False)
    b = continuation_nll(model, tok, prompts, garbled, batch_size=3, progress=False)
    assert token_perplexity(a.nll_sum, a.n_tokens) < 100 < token_perplexity(b.nll_sum, b.n_tokens)
    single = [continuation_nll(model, tok, [p], [c], batch_size=1, progress=False).nll_sum[0] for p, c in zip(prompts, fluent, strict=True)]
    np.testing.assert_allclose(a.nll_sum, single, rtol=1e-3, atol=1e-3)
    # The head-only fast path equals the model's own full forward.
    full = continuation_nll(model, tok, prompts, fluent, batch_size=3, progress=False, head_only=False)
    np.testing.assert_allclose(a.nll_sum, full.nll_sum, rtol=1e-4, atol=1e-4)
