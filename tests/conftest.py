"""Shared fixtures: tiny random models with real tokenizers, an isolated offline environment."""

from __future__ import annotations

import os

# Tests never reach the Hugging Face Hub or wandb's servers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from rectify.lm import LMConfig, RandomInit, gpt2_tokenizer, load_lm, smollm2_tokenizer  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_lm_config(family: str = "gpt2", **init) -> LMConfig:
    """Config of a tiny random model: GPT-2 with the real GPT-2 vocabulary, or Llama with SmolLM2's."""
    return LMConfig(source="hub", name_or_path=f"tiny-{family}", family=family, random_init=RandomInit(**init))


@pytest.fixture(scope="session")
def gpt2_tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def smollm2_tok():
    return smollm2_tokenizer()


@pytest.fixture()
def tiny_gpt2():
    """(model, tokenizer): 2-layer, 64-wide GPT-2 with the real 50257-token GPT-2 tokenizer."""
    model, tok = load_lm(tiny_lm_config("gpt2"))
    return model.eval(), tok


@pytest.fixture()
def tiny_llama():
    """(model, tokenizer): 2-layer, 64-wide Llama (SmolLM2's architecture) with SmolLM2's tokenizer."""
    model, tok = load_lm(tiny_lm_config("llama"))
    return model.eval(), tok


def words(prompts: list[str], texts: list[str]) -> list[int]:
    """A stand-in for assemble's ``prompt_len_of``: one token per word of the prompt."""
    return [len(p.split()) for p in prompts]
