"""Fluency: negative log-likelihood of a continuation given its prompt under a judge LM.

The judge reads ``prompt + continuation`` as one text (its own tokenizer, special tokens such as Gemma's
``<bos>`` included) and only the continuation's tokens are scored. A token belongs to the continuation when
its character span ends after the prompt (so a token straddling the boundary, e.g. a space that ends the
prompt merged with the next word, is scored as continuation). Tokenizers without offsets fall back to the
first position where the full text's tokens differ from the prompt's. The first token of a sequence has no
context and is never scored. Batches are right-padded with an attention mask, so results do not depend on
the batch composition (tests check batched == one by one).

Perplexity = exp(sum nll / sum tokens) over all continuation tokens (token-weighted), computed per prompt
subset from the per-generation sums; :func:`mean_generation_perplexity` gives DExperts' mean of
per-generation perplexities for comparison.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm


@dataclass
class ContinuationNLL:
    """Per item: summed nll (nats) over the continuation tokens, and how many tokens were scored."""

    nll_sum: np.ndarray  # [N] float64
    n_tokens: np.ndarray  # [N] int64


def continuation_flags(ids: list[int], offsets: list[tuple[int, int]], prompt_chars: int,
                       special: set[int]) -> list[bool]:
    """Per token of a text whose first ``prompt_chars`` characters are its prompt: is it the continuation's? A token
    ending past the prompt is (a BPE merge across the prompt's end is an action); special tokens (BOS) are not."""
    return [end > prompt_chars and tid not in special for tid, (_, end) in zip(ids, offsets, strict=True)]


def prompt_length(flags: list[bool]) -> int:
    """The tokens before the first continuation token: the value data's ``prompt_len``."""
    return flags.index(True) if True in flags else len(flags)


def encode_continuation(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[bool]]:
    """Token ids of prompt+continuation and a per-token flag "is a continuation token" (module doc: a token
    straddling the prompt's end is the continuation's; the value data's ``prompt_len`` counts the same way)."""
    full = prompt + continuation
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, return_offsets_mapping=True, add_special_tokens=True)
        ids = list(enc["input_ids"])
        return ids, continuation_flags(ids, enc["offset_mapping"], len(prompt), set(tokenizer.all_special_ids))
    ids = tokenizer(full, add_special_tokens=True)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    split = 0
    while split < min(len(ids), len(prompt_ids)) and ids[split] == prompt_ids[split]:
        split += 1
    if not continuation:
        split = len(ids)
    return list(ids), [i >= split for i in range(len(ids))]


def _head_parts(model):
    """(decoder, output head, softcap) when the model is the usual decoder + linear head, else None."""
    decoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is model:
        return None
    cfg = getattr(model.config, "text_config", None) or model.config
    return decoder, head, getattr(cfg, "final_logit_softcapping", None)


def _selected_nll(model, ids, mask, sel, targets, keep_arg: bool, head_only: bool = True, chunk: int = 256) -> torch.Tensor:
    """NLL of ``targets`` at the positions ``sel`` (``[B, T-1]``, position t predicts token t+1).

    The output head runs only on the scored positions (Gemma's head is 262k wide: most of the cost), in
    chunks; models without the usual decoder + head layout fall back to the full forward.
    """
    parts = _head_parts(model) if head_only else None
    if parts is not None:
        decoder, head, softcap = parts
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][sel]
        out = []
        for start in range(0, hidden.shape[0], chunk):
            logits = head(hidden[start : start + chunk]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            out.append(torch.nn.functional.cross_entropy(logits, targets[start : start + chunk], reduction="none"))
        return torch.cat(out)
    width = ids.shape[1]
    first = int(sel.float().argmax(dim=1).min())  # earliest scored logit position in the batch
    kwargs = {"logits_to_keep": width - first} if keep_arg else {}
    logits = model(input_ids=ids, attention_mask=mask, **kwargs).logits
    logits = logits[:, -(width - first) :] if keep_arg else logits[:, first:]
    # logits[:, j] now belongs to position first + j; drop the last position (it predicts nothing).
    picked = logits[:, : width - 1 - first][sel[:, first:]].float()
    return torch.nn.functional.cross_entropy(picked, targets, reduction="none")


def _max_length(model, default: int = 1024) -> int:
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


@torch.inference_mode()
def continuation_nll(
    model,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    desc: str = "perplexity",
    head_only: bool = True,
) -> ContinuationNLL:
    """Summed nll and token count of each continuation given its prompt (see the module docstring).

    ``head_only`` runs the output head only on scored positions (same numbers, much cheaper for a wide
    vocabulary); False uses the model's own full forward.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_length = max_length or _max_length(model)
    encoded = []
    for p, c in zip(prompts, continuations, strict=True):
        ids, flags = encode_continuation(tokenizer, p, c)
        if len(ids) > max_length:  # keep the end: the continuation is what we score
            ids, flags = ids[-max_length:], flags[-max_length:]
        flags[0] = False  # no context to predict the first token from
        encoded.append((ids, flags))

    n = len(encoded)
    nll_sum = np.zeros(n, dtype=np.float64)
    n_tokens = np.array([sum(f) for _, f in encoded], dtype=np.int64)
    todo = sorted((i for i in range(n) if n_tokens[i] > 0), key=lambda i: -len(encoded[i][0]))
    device = next(model.parameters()).device
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(todo), desc=desc, unit="seq", disable=not progress)
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            score = torch.zeros(len(batch), width, dtype=torch.bool)
            for row, i in enumerate(batch):
                tok, flags = encoded[i]
                ids[row, : len(tok)] = torch.tensor(tok)
                mask[row, : len(tok)] = 1
                score[row, : len(tok)] = torch.tensor(flags)
            sel = score[:, 1:]  # sel[:, t]: the logits at position t predict scored token t+1
            targets = ids[:, 1:][sel].to(device)
            nll = _selected_nll(model, ids.to(device), mask.to(device), sel.to(device), targets, keep_arg,
                                head_only).double().cpu()
            rows = torch.nonzero(sel, as_tuple=True)[0]
            sums = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows, nll)
            nll_sum[batch] = sums.numpy()
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return ContinuationNLL(nll_sum=nll_sum, n_tokens=n_tokens)


def token_perplexity(nll_sum: np.ndarray, n_tokens: np.ndarray) -> float:
    """exp(total nll / total tokens); NaN when nothing was scored."""
    total = float(np.sum(n_tokens))
    return float(np.exp(float(np.sum(nll_sum)) / total)) if total > 0 else float("nan")


def mean_generation_perplexity(nll_sum: np.ndarray, n_tokens: np.ndarray) -> float:
    """Mean over generations of exp(mean nll) (DExperts' aggregation); generations without tokens skipped."""
    nll_sum, n_tokens = np.asarray(nll_sum, dtype=np.float64), np.asarray(n_tokens)
    ok = n_tokens > 0
    return float(np.exp(nll_sum[ok] / n_tokens[ok]).mean()) if ok.any() else float("nan")
