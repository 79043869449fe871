"""SARSA targets and loss for Q_D on whole trajectories (the original's TD(0), plus n-step, lambda, MC).

Index convention: for a sequence of tokens ``x_0 .. x_{T-1}`` the state at position ``t`` is the prefix
``x_0..x_t`` (the backbone's hidden state at ``t``) and its action is ``a_t = x_{t+1}``; so Q has ``T - 1``
positions. The reward is terminal: it arrives with the last real action. Which positions are real comes
from the attention mask only (the pad token is often EOS, so token ids cannot tell).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TARGET_MODES = ("td0", "nstep", "lambda", "mc")


@dataclass
class TDConfig:
    """How targets are built; mirrors ``model.td`` in the configs."""

    mode: str = "td0"  # td0 (paper) | nstep | lambda | mc (every position regressed on the final reward)
    n: int = 1  # steps for mode=nstep
    lam: float = 0.0  # lambda for mode=lambda (0 = td0, 1 = mc)
    exclude_prompt: bool = False  # drop actions that are prompt tokens (needs prompt_len)

    def __post_init__(self) -> None:
        if self.mode not in TARGET_MODES:
            raise ValueError(f"td.mode={self.mode!r}; choose from {TARGET_MODES}")
        if self.n < 1:
            raise ValueError("td.n must be >= 1")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError("td.lam must be in [0, 1]")


def action_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T] -> [B, T-1]`` bool: position t is a real (state, action) pair when x_t and x_{t+1} are real."""
    m = attention_mask.bool()
    return m[:, :-1] & m[:, 1:]


def last_action(valid: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` bool: the final real action of each row (works under left or right padding)."""
    nxt = torch.zeros_like(valid)
    nxt[:, :-1] = valid[:, 1:]
    return valid & ~nxt


def steps_to_end(valid: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` long: how many real actions follow position t (0 at the last one)."""
    v = valid.long()
    after = v.flip(-1).cumsum(-1).flip(-1) - v
    return after * v


def prompt_mask(attention_mask: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` bool: True where the action ``x_{t+1}`` is a continuation token, not a prompt token.

    ``prompt_len`` counts real tokens (padding excluded), so this holds under either padding side.
    """
    real_index = attention_mask.long().cumsum(-1) - 1  # index of each real token among real tokens
    return real_index[:, 1:] >= prompt_len.to(real_index.device).unsqueeze(-1)


def td_targets(q_next: torch.Tensor, rewards: torch.Tensor, valid: torch.Tensor, gamma: float,
               q_min: float, q_max: float, cfg: TDConfig | None = None) -> torch.Tensor:
    """Regression targets ``[B, T-1]`` (detached, clamped to ``[q_min, q_max]``).

    ``q_next[b, t]`` is the *target* head's ``Q(s_t, a_t)``; the TD(0) target at t bootstraps from
    ``q_next[b, t+1]``; at the last real action it is the reward. Positions that are not valid get 0.
    """
    cfg = cfg or TDConfig()
    q_next = q_next.detach().float()
    valid = valid.bool()
    last = last_action(valid)
    r = rewards.to(q_next.device, torch.float32).reshape(-1, 1).expand_as(q_next)
    boot = torch.zeros_like(q_next)
    boot[:, :-1] = q_next[:, 1:]  # Q_target(s_{t+1}, a_{t+1})
    if cfg.mode == "td0" or (cfg.mode == "nstep" and cfg.n == 1) or (cfg.mode == "lambda" and cfg.lam == 0):
        target = torch.where(last, r, gamma * boot)
    elif cfg.mode == "mc":
        target = r * gamma ** steps_to_end(valid).float()
    elif cfg.mode == "nstep":
        k = steps_to_end(valid)
        shifted = torch.zeros_like(q_next)
        if cfg.n < q_next.shape[1]:
            shifted[:, : -cfg.n] = q_next[:, cfg.n:]
        target = torch.where(k < cfg.n, r * gamma ** k.float(), gamma ** cfg.n * shifted)
    else:  # lambda-return, backwards: G_t = gamma * ((1 - lam) * Q(t+1) + lam * G_{t+1}); G_last = r
        target = torch.zeros_like(q_next)
        g = torch.zeros_like(q_next[:, 0])
        for t in range(q_next.shape[1] - 1, -1, -1):
            nxt = q_next[:, t + 1] if t + 1 < q_next.shape[1] else torch.zeros_like(g)
            g = torch.where(last[:, t], r[:, t], gamma * ((1 - cfg.lam) * nxt + cfg.lam * g))
            target[:, t] = g
    target = target.clamp(q_min, q_max)
    return torch.where(valid, target, torch.zeros_like(target)).detach()


def td_loss(q: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked positions (a mean over real positions, not over the padded grid)."""
    mask = mask.to(q.dtype)
    denom = mask.sum().clamp_min(1.0)
    return ((q.float() - target.float()) ** 2 * mask).sum() / denom


def loss_mask(attention_mask: torch.Tensor, prompt_len: torch.Tensor | None, cfg: TDConfig) -> torch.Tensor:
    """Which positions enter the loss: real actions, minus prompt actions when asked."""
    mask = action_mask(attention_mask)
    if cfg.exclude_prompt:
        if prompt_len is None:
            raise ValueError("td.exclude_prompt=true needs a prompt_len for every training line")
        mask = mask & prompt_mask(attention_mask, prompt_len)
    return mask


def sarsa_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, rewards: torch.Tensor,
               prompt_len: torch.Tensor | None = None, cfg: TDConfig | None = None,
               gathered: bool = True, hidden: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Run a :class:`~rectify.value_model.ValueModel` on a batch and return loss + what to log.

    ``gathered=False`` builds the full ``[B, T, V]`` Q tensor and gathers afterwards: the reference the
    fast path is tested against. ``hidden`` replaces the backbone pass (e.g. from cached frozen layers).
    """
    cfg = cfg or TDConfig()
    vc = model.value_config
    if hidden is None:
        hidden, _ = model.hidden_states(input_ids, attention_mask)
    h = hidden[:, :-1]
    actions = input_ids[:, 1:]
    if gathered:
        q = model.q_taken(h, actions)
        with torch.no_grad():
            q_next = model.q_taken(h.detach(), actions, target=True)
    else:
        idx = actions.unsqueeze(-1)
        q = model.q_values(h).gather(-1, idx).squeeze(-1)
        with torch.no_grad():
            q_next = model.q_values(h.detach(), target=True).gather(-1, idx).squeeze(-1)
    valid = action_mask(attention_mask)
    target = td_targets(q_next, rewards, valid, vc.gamma, vc.q_min, vc.q_max, cfg)
    mask = loss_mask(attention_mask, prompt_len, cfg)
    return {"loss": td_loss(q, target, mask), "q": q.detach(), "valid": valid, "mask": mask}
