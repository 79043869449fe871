"""A KV cache that writes each decoding step into spare room instead of concatenating.

transformers' ``DynamicLayer`` appends a step with ``torch.cat``, which copies the layer's whole cache every
step: at 512 rows that was about half of a SmolLM2 decoding step on CPU (``docs/performance.md``). Here each
full-attention layer keeps its keys and values in buffers with ``spare`` free positions along the sequence;
a step writes one slot and the model sees views of the filled part. The buffers grow (by copying) only when
full, so a 20-token continuation copies the prompt's cache once. The values are the same tensors either way,
so outputs do not change. Sliding-window layers (Gemma 3) keep transformers' own class.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

SPARE = 32  # free positions added when a buffer is (re)allocated: a continuation of up to 32 tokens copies once


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys`` / ``values`` are views of larger buffers (``[B, H, capacity, D]``)."""

    spare = SPARE

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k = self._v = None
        self._n = 0

    def _refresh(self) -> None:
        self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        add = key_states.shape[-2]
        if self._k is None or self._n + add > self._k.shape[-2]:
            cap = self._n + add + self.spare
            k = key_states.new_empty((*key_states.shape[:2], cap, key_states.shape[-1]))
            v = value_states.new_empty((*value_states.shape[:2], cap, value_states.shape[-1]))
            if self._n:
                k[:, :, : self._n], v[:, :, : self._n] = self.keys, self.values
            self._k, self._v = k, v
        self._k[:, :, self._n: self._n + add] = key_states
        self._v[:, :, self._n: self._n + add] = value_states
        self._n += add
        self._refresh()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n if self.is_initialized and self._k is not None else 0

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized and self._k is not None:
            self._n = self.keys.shape[-2]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
            self._refresh()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._k, self._v = self._k[indices], self._v[indices]
            self._refresh()

    def reset(self) -> None:
        super().reset()
        self._k = self._v = None
        self._n = 0


def preallocated_cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` for ``config``'s decoder whose full-attention layers are :class:`PreallocatedLayer`."""
    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
