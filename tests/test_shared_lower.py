"""Q_D's frozen lower blocks read from the generator's forward (rectify/decoding/shared_lower.py): used only when
exact, and then rectified decoding draws the same tokens as with Q_D's own forward (tiny Llama with SmolLM2's
tokenizer; tiny Gemma 3 with a sliding layer); a Q_D whose lower blocks differ, or a GPT-2, runs alone."""

from __future__ import annotations

import copy

import pytest
import torch

from rectify.decoding import DecodingConfig, RectifiedSampler
from rectify.decoding.forward import lm_step, q_hidden_step
from rectify.decoding.shared_lower import LowerSharing
from rectify.lm import load_lm, position_ids_from_mask, transformer_layers, truncate_layers
from rectify.value_model import ValueModel
from tests.conftest import tiny_lm_config
from tests.test_kv_cache import tiny_gemma3
from tests.toy_models import peaky

FROZEN_TOP = {"freeze_backbone": True, "train_top_layers": 1, "bounded": True}


def trained_top(vm: ValueModel) -> ValueModel:
    """Stand in for training: move the top block, the final norm and the head away from their init."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in [*transformer_layers(vm.backbone)[-1].parameters(), *vm.head.parameters()]:
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
        vm.head.out.weight.mul_(30)
    return vm.eval()


def llama_pair(layers: int = 4, qd_layers: int = 3):
    gen, tok = load_lm(tiny_lm_config("llama", num_layers=layers, seed=0))
    gen = peaky(gen)   # before the copy: the tiny Llama ties its input and output embeddings
    backbone = truncate_layers(copy.deepcopy(gen), qd_layers)
    return gen, tok, trained_top(ValueModel.from_backbone(backbone, FROZEN_TOP, tok))


def test_found_only_when_the_lower_blocks_are_the_generators():
    gen, tok, vm = llama_pair()
    found = LowerSharing.find(gen, vm)
    assert found is not None and found.split == 2 and len(transformer_layers(found.upper)) == 1
    other = copy.deepcopy(vm)
    with torch.no_grad():
        next(transformer_layers(other.backbone)[0].parameters()).add_(1e-3)
    assert LowerSharing.find(gen, other) is None
    all_trained = ValueModel.from_backbone(copy.deepcopy(vm.backbone), {"bounded": True}, tok)
    assert LowerSharing.find(gen, all_trained) is None   # nothing frozen: nothing to share
    with pytest.raises(ValueError, match="share_lower=True"):
        RectifiedSampler(gen, tok, other, DecodingConfig(share_lower=True))


@pytest.mark.parametrize("dec", [
    {"do_sample": True, "tilt": 8.0, "epsilon": 0.05},
    {"do_sample": True, "q_scale": 10.0, "epsilon": 0.0, "top_k": 20},
    {"do_sample": False, "epsilon": 0.3},
])
def test_rectified_decoding_draws_the_same_tokens(dec):
    gen, tok, vm = llama_pair()
    common = {"num_return_sequences": 3, "max_new_tokens": 8, **dec}
    shared = RectifiedSampler(gen, tok, vm, DecodingConfig(**common))
    alone = RectifiedSampler(gen, tok, vm, DecodingConfig(share_lower=False, **common))
    assert shared.lower is not None and alone.lower is None
    prompts = ["The weather today", "You are such a", "x"]
    a, b = shared.generate(prompts, seeds=5), alone.generate(prompts, seeds=5)
    assert torch.equal(a.sequences, b.sequences) and a.lengths == b.lengths
    assert (a.dead_ends, a.outside_support, a.row_steps, a.stats) == (b.dead_ends, b.outside_support,
                                                                       b.row_steps, b.stats)
    plain = RectifiedSampler(gen, tok, None, DecodingConfig(rectify=False, **common)).generate(prompts, seeds=5)
    assert not torch.equal(plain.sequences, a.sequences)   # Q_D changed the draw: the comparison has teeth


def test_gemma3_with_a_sliding_layer_gives_q_ds_own_hidden_states_through_compaction():
    gen3 = tiny_gemma3()   # block 0 sliding (window 4, frozen and shared), block 1 full (Q_D's trained top)
    vm2 = trained_top(ValueModel.from_backbone(copy.deepcopy(gen3), FROZEN_TOP))
    found = LowerSharing.find(gen3, vm2)
    assert found is not None and found.split == 1
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with torch.inference_mode(), found.capture():
        pos = position_ids_from_mask(mask)
        _, _, cache = lm_step(gen3, ids, mask, pos)
        shared, s_cache = found.step(mask, pos)
        own, o_cache = q_hidden_step(vm2, ids, mask, pos)
        assert torch.equal(shared, own)
        for t in range(6):  # past the sliding window of 4
            if t == 2:
                keep = torch.tensor([0, 2])
                for c in (cache, s_cache, o_cache):
                    c.batch_select_indices(keep)
                mask = mask[keep]
            tok = torch.randint(5, 500, (len(mask), 1), generator=g)
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], -1)
            pos = position_ids_from_mask(mask)[:, -1:]
            _, _, cache = lm_step(gen3, tok, mask, pos, cache)
            shared, s_cache = found.step(mask, pos, s_cache)
            own, o_cache = q_hidden_step(vm2, tok, mask, pos, o_cache)
            assert torch.equal(shared, own), t


def test_gpt2_learned_positions_are_never_shared():
    gen, tok = load_lm(tiny_lm_config("gpt2", num_layers=3))
    vm = ValueModel.from_backbone(truncate_layers(copy.deepcopy(gen), 2), FROZEN_TOP, tok)
    assert LowerSharing.find(gen, vm) is None
    assert RectifiedSampler(gen, tok, vm, DecodingConfig()).lower is None
