"""One decoding step's forward passes: generator logits (+ its hidden state) and Q_D's Q values.

Both models run the base transformer and apply their output layer to the *last* position only, so no
``[B, T, V]`` tensor is built for the prompt. The generator's final hidden state is returned too: in the
shared-backbone mode the Q head reads it, so one forward serves both models.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from rectify.decoding.kv_cache import preallocated_cache
from rectify.lm import cache_kwarg, output_cache


def base_model(model: PreTrainedModel) -> torch.nn.Module:
    """The transformer without its LM head (``transformer`` for GPT-2, ``model`` for Llama/Gemma)."""
    return getattr(model, "base_model", model)


def lm_step(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            position_ids: torch.Tensor, past_key_values: Any = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Return ``(logits [B, V] float32, last hidden [B, H], cache)`` for the last position.

    The prefill starts a :func:`~rectify.decoding.kv_cache.preallocated_cache` (steps write into spare room)."""
    base = base_model(model)
    if past_key_values is None:
        past_key_values = preallocated_cache(model.config)
    out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
               return_dict=True, **{cache_kwarg(type(base)): past_key_values})
    hidden = out.last_hidden_state[:, -1]
    logits = model.get_output_embeddings()(hidden).float()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits, hidden, output_cache(out)


def q_hidden_step(value_model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  position_ids: torch.Tensor, past_key_values: Any = None,
                  use_cache: bool = True) -> tuple[torch.Tensor, Any]:
    """Q_D's last hidden state ``[B, H]`` plus its cache: the head runs later, on the whole vocabulary or
    only on the tokens the LM can sample (:func:`q_on_support`)."""
    device = next(value_model.parameters()).device
    hidden, cache = value_model.hidden_states(
        input_ids.to(device), attention_mask.to(device), position_ids.to(device),
        past_key_values=past_key_values, use_cache=use_cache,
    )
    return hidden[:, -1], cache


def q_step(value_model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
           past_key_values: Any = None, use_cache: bool = True, target: bool = False) -> tuple[torch.Tensor, Any]:
    """Q_D's values for every token after the last position: ``[B, V]`` float32, plus its cache."""
    hidden, cache = q_hidden_step(value_model, input_ids, attention_mask, position_ids, past_key_values, use_cache)
    return value_model.q_values(hidden, target=target).float(), cache


def q_on_support(value_model: Any, hidden: torch.Tensor, index: torch.Tensor, target: bool = False) -> torch.Tensor:
    """Q at the tokens ``index`` ``[B, K]`` only, from last hidden states ``[B, H]``: ``[B, K]`` float32.

    Gathers the head's output rows (``QHead.taken``) instead of the ``[B, V]`` product; equal to gathering
    ``q_values`` up to float rounding, including the Q_D's calibration map (monotone, elementwise).
    """
    q = value_model.q_taken(hidden.unsqueeze(1), index.to(hidden.device), target=target).float()
    transform = getattr(value_model, "q_transform", None)
    return q if transform is None else transform(q)
