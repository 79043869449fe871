"""TD targets on hand-worked examples, masks from the attention mask, and gathered == full head."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.td import (
    TDConfig,
    action_mask,
    last_action,
    loss_mask,
    sarsa_loss,
    td_loss,
    td_targets,
)
from rectify.value_model import ValueModel

# Sequence A: 4 real tokens + 1 pad (3 real actions), reward -1. Sequence B: 5 real tokens, reward 0.
ATTN = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
Q_NEXT = torch.tensor([[-0.2, -0.5, -0.9, 0.7], [-0.1, 0.3, -1.5, -0.4]])
REWARDS = torch.tensor([-1.0, 0.0])


def _targets(attn=ATTN, q_next=Q_NEXT, **cfg):
    valid = action_mask(attn)
    return td_targets(q_next, REWARDS, valid, 0.9, -1.0, 0.0, TDConfig(**cfg))


def test_td0_hand_worked():
    expected = torch.tensor([
        [0.9 * -0.5, 0.9 * -0.9, -1.0, 0.0],  # last real action gets the reward; the pad slot 0
        [0.0, -1.0, 0.9 * -0.4, 0.0],  # 0.27 -> clamped to 0; -1.35 -> clamped to -1; terminal 0
    ])
    torch.testing.assert_close(_targets(), expected)


def test_td0_left_padding_is_the_same_trajectory():
    attn = torch.tensor([[0, 1, 1, 1, 1]])
    q_next = torch.tensor([[0.5, -0.2, -0.5, -0.9]])  # shifted by one: slot 0 is padding
    valid = action_mask(attn)
    got = td_targets(q_next, REWARDS[:1], valid, 0.9, -1.0, 0.0)
    torch.testing.assert_close(got, torch.tensor([[0.0, 0.9 * -0.5, 0.9 * -0.9, -1.0]]))


def test_mc_hand_worked():
    expected = torch.tensor([[-0.81, -0.9, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(_targets(mode="mc"), expected)


def test_nstep_hand_worked():
    expected = torch.tensor([[0.81 * -0.9, -0.9, -1.0, 0.0], [-1.0, 0.81 * -0.4, 0.0, 0.0]])
    torch.testing.assert_close(_targets(mode="nstep", n=2), expected)


def test_lambda_limits():
    torch.testing.assert_close(_targets(mode="lambda", lam=1.0), _targets(mode="mc"))
    torch.testing.assert_close(_targets(mode="lambda", lam=1e-9), _targets(), atol=1e-6, rtol=0)


def test_masks_ignore_token_ids():
    valid = action_mask(ATTN)
    assert valid.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert last_action(valid).tolist() == [[False, False, True, False], [False, False, False, True]]
    prompt = loss_mask(ATTN, torch.tensor([2, 3]), TDConfig(exclude_prompt=True))
    # actions x_{t+1} with real index >= prompt_len
    assert prompt.tolist() == [[False, True, True, False], [False, False, True, True]]
    with pytest.raises(ValueError, match="prompt_len"):
        loss_mask(ATTN, None, TDConfig(exclude_prompt=True))


def test_loss_is_mean_over_real_positions():
    q = torch.zeros(2, 4)
    target = _targets()
    mask = action_mask(ATTN)
    expected = (target[mask] ** 2).mean()
    torch.testing.assert_close(td_loss(q, target, mask), expected)


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(2, 7), min_size=1, max_size=4),
    gamma=st.floats(0.5, 1.0),
    mode=st.sampled_from(["td0", "nstep", "lambda", "mc"]),
    seed=st.integers(0, 1000),
)
def test_targets_bounded_and_zero_on_padding(lengths, gamma, mode, seed):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    attn = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    q_next = torch.randn(len(lengths), T - 1, generator=g) * 2
    rewards = -torch.randint(0, 2, (len(lengths),), generator=g).float()
    valid = action_mask(attn)
    tgt = td_targets(q_next, rewards, valid, gamma, -1.0, 0.0, TDConfig(mode=mode, n=2, lam=0.5))
    assert tgt.min() >= -1.0 and tgt.max() <= 0.0
    assert (tgt[~valid] == 0).all()
    # the terminal target is always the reward
    assert torch.equal(tgt[last_action(valid)], rewards)


@pytest.mark.parametrize("cfg", [{}, {"bounded": True, "state_value": True}])
def test_gathered_equals_full_loss_and_grads(tiny_gpt2, cfg):
    model, tok = tiny_gpt2
    vm = ValueModel.from_backbone(model, {"gamma": 0.9, **cfg}, tok).eval()
    with torch.no_grad():  # make the target head differ so bootstrapping matters
        for p in vm.target_head.parameters():
            p.add_(0.01 * torch.randn_like(p))
    enc = tok(["the cat sat on the mat", "hi"], return_tensors="pt", padding=True)
    rewards = torch.tensor([-1.0, 0.0])
    losses, grads = [], []
    for gathered in (True, False):
        vm.zero_grad()
        out = sarsa_loss(vm, enc["input_ids"], enc["attention_mask"], rewards, gathered=gathered)
        out["loss"].backward()
        losses.append(out["loss"].detach())
        grads.append({n: p.grad.clone() for n, p in vm.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    assert not any(n.startswith("target_head") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)
