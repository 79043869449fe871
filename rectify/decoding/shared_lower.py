"""Q_D's frozen lower blocks are the generator's own: run only Q_D's trained top blocks per decoding step.

The recommended Q_D (``+experiment=smollm2``) is SmolLM2's first 10 blocks with the lower 9 frozen. Fed the same
tokens, those 9 blocks compute exactly what the generator's first 9 compute, so the input of Q_D's first trained
block is the input of the generator's block 9, already computed for the generator's own step. Reading it there
(a forward pre-hook) leaves Q_D one block + its final norm + the head per step instead of 10 blocks.

It is used only when it is exact: the embeddings and the lower blocks must be equal tensor for tensor (same dtype,
same device), and a short probe must give bitwise the same last hidden state, from the prompt and from one cached
step, as Q_D's own forward. Otherwise :meth:`LowerSharing.find` returns None and Q_D runs alone, as before.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from rectify.decoding.forward import base_model, lm_step
from rectify.decoding.kv_cache import preallocated_cache
from rectify.lm import cache_kwarg, output_cache, position_ids_from_mask, same_weights, transformer_layers

PROBE_TOKENS = 6


def _reindexed(layer: nn.Module, index: int) -> nn.Module:
    """A shallow copy of a decoder block whose attention reads KV-cache layer ``index`` (parameters shared)."""
    attn_name = next((n for n in ("self_attn", "attn", "attention") if hasattr(layer, n)), None)
    if attn_name is None or not hasattr(getattr(layer, attn_name), "layer_idx"):
        raise ValueError(f"cannot find the attention layer_idx of {type(layer).__name__}")
    attn = copy.copy(getattr(layer, attn_name))
    attn.layer_idx = index
    out = copy.copy(layer)
    out._modules = dict(layer._modules)
    out._modules[attn_name] = attn
    if hasattr(out, "layer_idx"):
        out.layer_idx = index
    return out


class LowerSharing:
    """Q_D's trained top blocks run on the input of the generator's block ``split`` (see the module docstring)."""

    def __init__(self, generator: PreTrainedModel, value_model: Any, split: int):
        self.generator, self.value_model, self.split = generator, value_model, split
        base = base_model(value_model.backbone)
        layers = transformer_layers(value_model.backbone)
        attr = next(name for name, mod in base.named_children() if mod is layers)
        top = list(layers)[split:]
        upper = copy.copy(base)  # the same modules, but only the top blocks, re-indexed into a cache of their own
        upper._modules = dict(base._modules)
        upper._modules[attr] = nn.ModuleList([_reindexed(layer, i) for i, layer in enumerate(top)])
        cfg = copy.deepcopy(base.config)
        cfg.num_hidden_layers = len(top)
        if isinstance(getattr(cfg, "layer_types", None), list):
            cfg.layer_types = cfg.layer_types[split:]
        upper.config = cfg
        self.upper = upper
        self._cache_kw = cache_kwarg(type(base))
        self._captured: torch.Tensor | None = None

    # ------------------------------------------------------------------ when it applies

    @classmethod
    def find(cls, generator: PreTrainedModel, value_model: Any) -> LowerSharing | None:
        """A LowerSharing when Q_D's frozen lower part equals the generator's and a probe agrees bitwise."""
        split = value_model.split_index() if hasattr(value_model, "split_index") else None
        if not split:
            return None
        gbase, vbase = base_model(generator), base_model(value_model.backbone)
        if type(gbase) is not type(vbase) or hasattr(vbase, "wpe"):  # learned positions ride on inputs_embeds
            return None
        glayers, vlayers = transformer_layers(generator), transformer_layers(value_model.backbone)
        if len(glayers) <= split:
            return None
        pairs = [(gbase.get_input_embeddings(), vbase.get_input_embeddings()),
                 *zip(list(glayers)[:split], list(vlayers)[:split], strict=True)]
        if not all(same_weights(g, v, exact=True) for g, v in pairs):
            return None
        found = cls(generator, value_model, split)
        return found if found.probe() else None

    @torch.inference_mode()
    def probe(self) -> bool:
        """Q_D's own last hidden state and the shared one, bitwise, on a short prompt and one cached step."""
        device = next(self.generator.parameters()).device
        vocab = self.generator.get_input_embeddings().num_embeddings
        ids = (torch.arange(PROBE_TOKENS + 1, device=device) * 7919 % vocab).unsqueeze(0)
        mask = torch.ones_like(ids)
        vm = self.value_model
        own, own_cache = vm.hidden_states(ids[:, :-1], mask[:, :-1], position_ids_from_mask(mask[:, :-1]),
                                          use_cache=True)
        own_step, _ = vm.hidden_states(ids[:, -1:], mask, position_ids_from_mask(mask)[:, -1:],
                                       past_key_values=own_cache, use_cache=True)
        with self.capture():
            _, _, gen_cache = lm_step(self.generator, ids[:, :-1], mask[:, :-1],
                                      position_ids_from_mask(mask[:, :-1]))
            shared, cache = self.step(mask[:, :-1], position_ids_from_mask(mask[:, :-1]))
            lm_step(self.generator, ids[:, -1:], mask, position_ids_from_mask(mask)[:, -1:], gen_cache)
            shared_step, _ = self.step(mask, position_ids_from_mask(mask)[:, -1:], cache)
        return torch.equal(own[:, -1], shared) and torch.equal(own_step[:, -1], shared_step)

    # ------------------------------------------------------------------ per step

    @contextmanager
    def capture(self) -> Iterator[None]:
        """While open, every generator forward leaves the input of its block ``split`` here."""
        def grab(module, args, kwargs):
            self._captured = args[0] if args else kwargs["hidden_states"]

        handle = transformer_layers(self.generator)[self.split].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            self._captured = None

    def step(self, attention_mask: torch.Tensor, position_ids: torch.Tensor,
             cache: Any = None) -> tuple[torch.Tensor, Any]:
        """Q_D's last hidden state ``[B, H]`` and its top blocks' cache, from the generator's latest forward."""
        if self._captured is None:
            raise RuntimeError("LowerSharing.step needs a generator forward inside capture()")
        if cache is None:
            cache = preallocated_cache(self.upper.config)
        out = self.upper(inputs_embeds=self._captured, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, return_dict=True, **{self._cache_kw: cache})
        return out.last_hidden_state[:, -1], output_cache(out)
