"""``RectifyLogitsProcessor``: rectification for users who call ``model.generate(...)`` themselves.

``generate()`` runs user processors *before* its own warpers (temperature, top-k 50 by default, top-p), and
any warper applied after the projection would renormalise and break the caps. So this processor does the
warping itself and returns ``log`` of the projected distribution; call ``generate`` with the warpers off::

    proc = RectifyLogitsProcessor(value_model, epsilon=0.1, top_k=0, top_p=0.9, temperature=1.0,
                                  attention_mask=enc.attention_mask)
    out = model.generate(**enc, logits_processor=[proc], **proc.generate_kwargs(), max_new_tokens=20)

(``generate_kwargs()`` is ``{"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}``.) Q_D is
re-run over the whole prefix at every call (no cache: ``generate`` owns the loop), which is exact but
slower than :class:`rectify.decoding.RectifiedSampler`. Pass the prompt's ``attention_mask`` for left-padded
batches: padding is never guessed from token ids (pad may equal EOS).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import LogitsProcessor

from rectify.decoding.caps import CapConfig
from rectify.decoding.rows import rectify_probs, stop_ids_of
from rectify.decoding.sampler import VocabularyMismatch
from rectify.decoding.warping import warp_logits
from rectify.lm import position_ids_from_mask, same_vocabulary, vocabulary_difference


class RectifyLogitsProcessor(LogitsProcessor):
    """Warp, cap with Q_D and KL-project the next-token distribution; returns log-probabilities."""

    def __init__(self, value_model: Any, epsilon: float = 0.1, p_min: float = 1e-5, p_max: float = 1.0,
                 cap_mode: str = "original", temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 attention_mask: torch.Tensor | None = None, q_head: str = "online", q_scale: float = 1.0,
                 q_baseline: str = "zero", tilt: float = 0.0, stop_neutral: bool = True,
                 eos_token_id: int | list[int] | None = None, tokenizer: Any = None):
        """``tokenizer``: the generator's, checked against Q_D's; with it, a generator whose embedding is padded
        past its tokenizer (more scores than Q_D has values) is rectified on the real vocabulary."""
        self.value_model = value_model.eval()
        q_tok = getattr(value_model, "tokenizer", None)
        if tokenizer is not None and q_tok is not None and not same_vocabulary(tokenizer, q_tok):
            raise VocabularyMismatch(f"the generator's tokenizer (first) differs from Q_D's (second): "
                                     f"{vocabulary_difference(tokenizer, q_tok)}; Q_D can only rectify an LM with "
                                     "its vocabulary")
        if attention_mask is not None and bool((attention_mask[:, 1:] < attention_mask[:, :-1]).any()):
            # generate() appends each new token after the padding: Q_D would read the prompt, pads, then the
            # continuation, at positions that skip the pads
            raise ValueError("attention_mask has padding after a prompt (right padding): tokenize the prompts with "
                             "padding_side='left', as generate() needs for a decoder-only LM")
        self.tokenizer = tokenizer
        # Validated here, before generate() starts.
        self.cap_rule = CapConfig(epsilon=epsilon, p_min=p_min, p_max=p_max, mode=cap_mode, q_scale=q_scale,
                                  q_baseline=q_baseline, tilt=tilt, stop_neutral=stop_neutral)
        self.stop_ids = stop_ids_of(value_model, eos_token_id)   # Q_D's tokenizer's EOS unless given
        if self.stop_ids is None and self.cap_rule.needs_stop:
            raise ValueError("a stop-neutral tilt needs the EOS id: pass eos_token_id (or stop_neutral=False)")
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.prompt_mask = attention_mask
        self.target = q_head == "target"
        self.dead_ends = 0
        self.outside_support = 0

    @staticmethod
    def generate_kwargs(do_sample: bool = True) -> dict[str, Any]:
        """Settings that stop ``generate()`` from warping after this processor; ``do_sample=False``: greedy, the
        argmax of the rectified distribution (no warper runs then, so none is named)."""
        if not do_sample:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}

    def _mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        n, length = input_ids.shape
        if self.prompt_mask is None:
            return torch.ones_like(input_ids)
        prompt = self.prompt_mask.to(input_ids.device).long()
        if prompt.shape[0] != n:
            if n % prompt.shape[0]:
                raise ValueError(f"batch of {n} rows does not fit a prompt mask of {prompt.shape[0]} rows")
            prompt = prompt.repeat_interleave(n // prompt.shape[0], 0)
        new = length - prompt.shape[1]
        if new < 0:
            raise ValueError("input_ids are shorter than the prompt mask")
        return torch.cat([prompt, prompt.new_ones(n, new)], -1)

    @torch.inference_mode()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self._mask(input_ids)
        device = next(self.value_model.parameters()).device
        hidden, _ = self.value_model.hidden_states(input_ids.to(device), mask.to(device),
                                                   position_ids_from_mask(mask).to(device))
        q = self.value_model.q_values(hidden[:, -1], target=self.target).float().to(scores.device)
        if scores.shape[-1] > q.shape[-1] and (self.tokenizer is None or len(self.tokenizer) > q.shape[-1]):
            raise ValueError(f"the generator scores {scores.shape[-1]} tokens but Q_D only {q.shape[-1]}: Q_D must "
                             "share the generator's vocabulary. If the generator's embedding is only padded past "
                             "its tokenizer, pass tokenizer=<the generator's tokenizer> (checked against Q_D's)")
        full, v = scores, min(scores.shape[-1], q.shape[-1])
        # a generator whose embedding is padded past its tokenizer (e.g. 49216 rows for 49152 tokens) scores ids no
        # text has: they get probability 0, as in RectifiedSampler, and Q_D rectifies the real vocabulary
        scores, q = scores[:, :v], q[:, :v]
        probs = torch.softmax(warp_logits(scores, self.temperature, self.top_k, self.top_p), -1)
        proj = rectify_probs(probs, q, self.cap_rule,
                             fallback=lambda: torch.softmax(scores.float() / self.temperature, -1),
                             stop_ids=self.stop_ids)
        self.dead_ends += int(proj.dead_end.sum())
        self.outside_support += int(proj.outside_support.sum())
        out = torch.full_like(full, -math.inf)
        out[:, :v] = torch.log(proj.probs).to(full.dtype)
        return out
