"""Value model: gathered == full head, Polyak math, bounds, LM-head init, freezing, save/load round trip."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.lm import transformer_layers
from rectify.value_model import QHead, ValueConfig, ValueModel


def _batch(tok, texts=("hello there my friend", "you are")):
    enc = tok(list(texts), return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_shapes_and_gathered_equals_full(tiny_gpt2):
    model, tok = tiny_gpt2
    vm = ValueModel.from_backbone(model, {"state_value": True}, tok).eval()
    ids, mask = _batch(tok)
    hidden, _ = vm.hidden_states(ids, mask)
    assert hidden.shape == (*ids.shape, model.config.n_embd)
    full = vm.q_values(hidden)
    assert full.shape == (*ids.shape, len(tok))
    actions = ids[:, 1:]
    gathered = vm.q_taken(hidden[:, :-1], actions)
    torch.testing.assert_close(gathered, full[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vm(ids, mask), full)


@settings(max_examples=20, deadline=None)
@given(alpha=st.floats(0.0, 1.0), steps=st.integers(1, 3))
def test_polyak_update_math(alpha, steps):
    head = QHead(4, 7, ValueConfig())
    torch.manual_seed(1)

    class Holder(torch.nn.Module):
        pass

    vm = Holder()
    vm.head, vm.target_head = head, QHead(4, 7, ValueConfig())
    vm.value_config = ValueConfig()
    expected = [p.detach().clone() for p in vm.target_head.parameters()]
    for _ in range(steps):
        ValueModel.polyak_update(vm, alpha)
        expected = [alpha * o.detach() + (1 - alpha) * t for o, t in zip(head.parameters(), expected, strict=True)]
    for t, e in zip(vm.target_head.parameters(), expected, strict=True):
        torch.testing.assert_close(t, e, atol=1e-6, rtol=1e-6)


def test_target_head_is_frozen_copy(tiny_gpt2):
    model, tok = tiny_gpt2
    vm = ValueModel.from_backbone(model, None, tok)
    assert all(not p.requires_grad for p in vm.target_head.parameters())
    for t, o in zip(vm.target_head.parameters(), vm.head.parameters(), strict=True):
        assert torch.equal(t, o) and t.data_ptr() != o.data_ptr()


def test_bounded_output_in_range(tiny_llama):
    model, tok = tiny_llama
    vm = ValueModel.from_backbone(model, {"bounded": True, "q_min": -1.0, "q_max": 0.0}, tok)
    with torch.no_grad():
        vm.head.out.weight.mul_(1000)  # push the pre-activation far out
        q = vm(*_batch(tok))
    assert q.min() >= -1.0 and q.max() <= 0.0


@pytest.mark.parametrize("scale_on", ["rows", "query"])
def test_init_from_lm_head_reproduces_scaled_logits(tiny_gpt2, scale_on):
    model, tok = tiny_gpt2
    vm = ValueModel.from_backbone(model, {"init_from_lm_head": True, "init_scale": 0.01,
                                          "init_scale_on": scale_on}, tok).eval()
    ids, mask = _batch(tok)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask,
                       position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
        q = vm(ids, mask)
    torch.testing.assert_close(q, 0.01 * logits - 0.5, atol=1e-4, rtol=1e-4)
    rows = vm.head.out.weight.norm(dim=1).mean() / model.get_output_embeddings().weight.norm(dim=1).mean()
    assert rows.item() == pytest.approx((2 ** 0.5) * (0.01 if scale_on == "rows" else 1.0), rel=1e-4)
    with pytest.raises(ValueError, match="init_scale_on"):
        ValueModel.from_backbone(model, {"init_from_lm_head": True, "init_scale_on": "fc"}, tok)


def test_freeze_with_top_layers(tiny_llama):
    model, tok = tiny_llama
    vm = ValueModel.from_backbone(model, {"freeze_backbone": True, "train_top_layers": 1}, tok)
    layers = transformer_layers(vm.backbone)
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not vm.backbone.get_input_embeddings().weight.requires_grad
    assert all(p.requires_grad for p in vm.head.parameters())


def test_save_load_round_trip(tiny_llama, tmp_path):
    model, tok = tiny_llama
    vm = ValueModel.from_backbone(model, {"gamma": 0.9, "dropout": 0.1, "init_from_lm_head": True,
                                          "freeze_output_rows": True}, tok).eval()
    with torch.no_grad():
        vm.target_head.out.bias.add_(0.3)  # target differs from online: both must survive
    out = vm.save_pretrained(tmp_path / "vm")
    loaded = ValueModel.from_pretrained(out)
    assert loaded.value_config == vm.value_config
    assert not loaded.head.out.weight.requires_grad
    assert loaded.tokenizer is not None and len(loaded.tokenizer) == len(tok)
    ids, mask = _batch(tok)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), vm(ids, mask))
        torch.testing.assert_close(loaded(ids, mask, target=True), vm(ids, mask, target=True))


def test_left_padding_matches_unpadded(tiny_gpt2):
    model, tok = tiny_gpt2
    vm = ValueModel.from_backbone(model, None, tok).eval()
    ids = tok("a short text here", return_tensors="pt")["input_ids"]
    pad = torch.full((1, 3), tok.pad_token_id)
    padded = torch.cat([pad, ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], 1)
    with torch.no_grad():
        torch.testing.assert_close(vm(padded, mask)[:, 3:], vm(ids), atol=1e-5, rtol=1e-4)


def test_kv_cache_step_matches_full_pass(tiny_llama):
    """Decoding feeds one token at a time with the cache; Q must equal the full-prefix pass."""
    model, tok = tiny_llama
    vm = ValueModel.from_backbone(model, None, tok).eval()
    ids, mask = _batch(tok, ("one two three four", "five six"))
    tok_left = tok.padding_side
    with torch.no_grad():
        full_hidden, _ = vm.hidden_states(ids, mask)
        h1, cache = vm.hidden_states(ids[:, :-1], mask[:, :-1], use_cache=True)
        h2, _ = vm.hidden_states(ids[:, -1:], mask, past_key_values=cache, use_cache=True)
    assert cache is not None and tok_left == "right"
    # row 0 has no padding: the cached last step equals the full pass
    torch.testing.assert_close(h2[0, -1], full_hidden[0, -1], atol=1e-4, rtol=1e-4)


def test_cached_lower_layers_give_the_same_hidden(tiny_llama):
    model, tok = tiny_llama
    vm = ValueModel.from_backbone(model, {"train_top_layers": 1}, tok).eval()
    ids, mask = _batch(tok)
    with torch.no_grad():
        full, _ = vm.hidden_states(ids, mask)
        upper = vm.upper_hidden(vm.lower_hidden(ids, mask), mask)
    real = mask.bool()
    torch.testing.assert_close(upper[real], full[real], atol=1e-5, rtol=1e-4)
    assert len(transformer_layers(vm.backbone)) == 2  # the swap is undone


def test_cached_lower_layers_on_gemma3():
    """Gemma 3 (a sliding-window block below, a full one on top) builds its own cache from the config's layer
    list when not told otherwise: the top block alone must still run, and match the full pass."""
    from tests.test_kv_cache import tiny_gemma3

    vm = ValueModel.from_backbone(tiny_gemma3(), {"train_top_layers": 1}).eval()
    ids = torch.randint(5, 500, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0   # left padding
    with torch.no_grad():
        full, _ = vm.hidden_states(ids, mask)
        upper = vm.upper_hidden(vm.lower_hidden(ids, mask), mask)
    real = mask.bool()
    torch.testing.assert_close(upper[real], full[real], atol=1e-5, rtol=1e-4)
    assert vm.backbone.config.layer_types == ["sliding_attention", "full_attention"]  # the swap is undone


def test_cache_refuses_gpt2(tiny_gpt2):
    model, tok = tiny_gpt2
    vm = ValueModel.from_backbone(model, {"train_top_layers": 1}, tok)
    ids, mask = _batch(tok)
    import pytest

    with pytest.raises(ValueError, match="rotary"):
        vm.lower_hidden(ids, mask)


def test_dropout_only_on_the_online_head(tiny_gpt2):
    model, tok = tiny_gpt2
    vm = ValueModel.from_backbone(model, {"dropout": 0.5}, tok).train()
    hidden = torch.randn(2, 3, model.config.n_embd)
    a, b = vm.q_values(hidden, target=True), vm.q_values(hidden, target=True)
    torch.testing.assert_close(a, b)  # targets are deterministic in train mode
    assert not torch.equal(vm.q_values(hidden), vm.q_values(hidden))


def test_freeze_output_rows_trains_the_query_not_the_rows(tiny_llama):
    model, tok = tiny_llama
    vm = ValueModel.from_backbone(model, {"init_from_lm_head": True, "freeze_output_rows": True,
                                          "state_value": True, "freeze_backbone": True}, tok)
    rows = vm.head.out.weight.detach().clone()
    assert not vm.head.out.weight.requires_grad and not vm.head.out.bias.requires_grad
    assert vm.head.fc.weight.requires_grad and vm.head.value.weight.requires_grad
    ids, mask = _batch(tok)
    hidden, _ = vm.hidden_states(ids, mask)
    taken = ids[:, 1:]
    untaken = torch.full_like(taken, int(ids.max()) + 1)  # a token that no position takes
    with torch.no_grad():
        before = vm.q_taken(hidden[:, :-1], untaken)
    opt = torch.optim.SGD([p for p in vm.parameters() if p.requires_grad], lr=0.5)
    vm.q_taken(hidden[:, :-1], taken).sum().backward()  # push every taken token's Q down
    opt.step()
    torch.testing.assert_close(vm.head.out.weight, rows)
    with torch.no_grad():
        after = vm.q_taken(hidden[:, :-1], untaken)
    assert not torch.allclose(before, after)  # the learned query moves Q of tokens never taken too


def test_freeze_output_rows_needs_lm_init(tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(ValueError, match="init_from_lm_head"):
        ValueModel.from_backbone(model, {"freeze_output_rows": True}, tok)
