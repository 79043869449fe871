"""The preallocated KV cache gives the same logits as transformers' DynamicCache, through prefill, repeat,
compaction and growth past its spare room, on tiny GPT-2, Llama and Gemma 3 (sliding layers kept)."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from rectify.decoding.forward import lm_step
from rectify.decoding.kv_cache import SPARE, PreallocatedLayer, preallocated_cache
from rectify.lm import load_lm, position_ids_from_mask
from tests.conftest import tiny_lm_config


def decode(model, cache, steps: int) -> list[torch.Tensor]:
    """Prefill 3 left-padded prompts, repeat each twice, drop rows at step 3, feed fixed tokens."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (3, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    out = []
    with torch.inference_mode():
        logits, _, cache = lm_step(model, ids, mask, position_ids_from_mask(mask), cache)
        cache.batch_repeat_interleave(2)
        mask = mask.repeat_interleave(2, 0)
        pos = position_ids_from_mask(mask)[:, -1:]
        for t in range(steps):
            if t == 3:
                keep = torch.tensor([0, 2, 3, 5])
                cache.batch_select_indices(keep)
                mask, pos = mask[keep], pos[keep]
            tok = torch.randint(5, 500, (len(mask), 1), generator=g)
            mask, pos = torch.cat([mask, mask.new_ones(len(mask), 1)], -1), pos + 1
            logits, _, cache = lm_step(model, tok, mask, pos, cache)
            out.append(logits)
    assert cache.get_seq_length() == 6 + steps
    return out


def tiny_gemma3():
    """A 2-layer Gemma 3 text model (one sliding-window layer of 4 tokens, one full) on a 600-token vocabulary."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    return Gemma3ForCausalLM(cfg).eval()


def model_of(family: str):
    return tiny_gemma3() if family == "gemma3" else load_lm(tiny_lm_config(family))[0].eval()


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_same_logits_as_dynamic_cache(family):
    model = model_of(family)
    steps = SPARE + 5  # past the first allocation's spare room
    want = decode(model, DynamicCache(config=model.config), steps)
    got = decode(model, None, steps)  # lm_step starts a preallocated cache
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_only_full_attention_layers_are_replaced():
    kinds = [type(layer) for layer in preallocated_cache(tiny_gemma3().config).layers]
    assert kinds[1] is PreallocatedLayer and kinds[0] is not PreallocatedLayer and issubclass(kinds[0], DynamicLayer)
