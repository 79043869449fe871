"""Model and tokenizer loading: offline GPT-2 tokenizer, bundled SmolLM2, tiny random models, errors."""

from __future__ import annotations

import pytest
import tiktoken
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken.load import load_tiktoken_bpe

from rectify import assets
from rectify.lm import (
    GPT2_PATTERN,
    LMConfig,
    LMLoadError,
    load_lm,
    load_tokenizer,
    same_vocabulary,
    transformer_layers,
    truncate_layers,
)
from tests.conftest import tiny_lm_config


@pytest.fixture(scope="module")
def reference_gpt2_encoding():
    """tiktoken's own r50k_base encoder, built from the same offline ranks file."""
    ranks = load_tiktoken_bpe(str(assets.asset_path("gpt2_tiktoken", "gpt2.tiktoken")))
    return tiktoken.Encoding("r50k_base_offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def test_gpt2_tokenizer_known_ids(gpt2_tok):
    assert gpt2_tok("Hello world").input_ids == [15496, 995]
    assert len(gpt2_tok) == 50257
    assert gpt2_tok.eos_token_id == 50256
    assert gpt2_tok.pad_token_id == 50256  # pad = EOS: padding must never be detected by token id


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_gpt2_tokenizer_matches_tiktoken(gpt2_tok, reference_gpt2_encoding, text):
    ids = gpt2_tok(text, add_special_tokens=False).input_ids
    assert ids == reference_gpt2_encoding.encode_ordinary(text)
    assert gpt2_tok.decode(ids) == text


def test_smollm2_loads_from_cache_and_greedy_is_deterministic():
    model, tok = load_lm({"source": "smollm2"})
    assert model.config.num_hidden_layers == 30 and len(tok) == 49152
    assert tok("Hello").input_ids[0] != tok.bos_token_id  # SmolLM2 adds no BOS
    prompt = tok("The capital of France is", return_tensors="pt")
    outs = [model.generate(**prompt, max_new_tokens=6, do_sample=False)[0].tolist() for _ in range(2)]
    assert outs[0] == outs[1]
    assert "Paris" in tok.decode(outs[0][prompt.input_ids.shape[1]:])


@pytest.mark.parametrize("family,vocab", [("gpt2", 50257), ("llama", 49152)])
def test_tiny_random_models_build_from_config(family, vocab):
    model, tok = load_lm(tiny_lm_config(family, num_layers=3, hidden_size=32, num_heads=2))
    assert model.config.vocab_size == vocab == len(tok)
    assert len(transformer_layers(model)) == 3
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    ids = tok(["a short text", "another"], return_tensors="pt", padding=True)
    logits = model(**ids).logits
    assert logits.shape[:2] == ids.input_ids.shape and logits.shape[-1] == vocab
    # Same seed, same weights.
    again, _ = load_lm(tiny_lm_config(family, num_layers=3, hidden_size=32, num_heads=2))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True))


def test_truncation_keeps_first_layers():
    full, _ = load_lm(tiny_lm_config("gpt2", num_layers=4))
    first = [p.clone() for p in transformer_layers(full)[0].parameters()]
    truncate_layers(full, 2)
    assert len(transformer_layers(full)) == 2 and full.config.n_layer == 2
    assert all(torch.equal(a, b) for a, b in zip(first, transformer_layers(full)[0].parameters(), strict=True))
    with pytest.raises(LMLoadError, match="num_layers=5"):
        truncate_layers(full, 5)


def test_num_layers_caps_a_random_models_depth():
    from dataclasses import replace

    cfg = tiny_lm_config("llama", num_layers=2)
    assert len(transformer_layers(load_lm(replace(cfg, num_layers=10))[0])) == 2  # smoke stand-in of a 10-block Q_D
    assert len(transformer_layers(load_lm(replace(cfg, num_layers=1))[0])) == 1


def test_config_from_omegaconf_and_unknown_keys():
    from omegaconf import OmegaConf

    cfg = LMConfig.from_any(OmegaConf.create({"source": "smollm2", "random_init": {"num_layers": 1}}))
    assert cfg.random_init.num_layers == 1
    with pytest.raises(LMLoadError, match="unknown LM config keys"):
        LMConfig.from_any({"source": "hub", "nmae_or_path": "gpt2"})


def test_unreachable_hub_name_points_to_offline_configs(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LMLoadError, match=r"(?s)gpt2-large.*lm=smollm2"):
        load_lm({"source": "hub", "name_or_path": "gpt2-large", "tokenizer": "gpt2"})


def test_a_missing_local_dir_is_named_before_the_tokenizer_tries_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "nonexistent")
    with pytest.raises(LMLoadError, match=r"^lm\.name_or_path='.*nonexistent' is not a directory: lm\.source=local"):
        load_lm({"source": "local", "name_or_path": missing, "family": "gpt2"})
    with pytest.raises(LMLoadError, match=r"^lm\.name_or_path='.*nonexistent' is not a directory"):
        load_tokenizer({"source": "local", "name_or_path": missing})
    with pytest.raises(LMLoadError, match=r"^lm\.name_or_path is required"):
        load_tokenizer({"source": "local"})


def test_vocabulary_check(gpt2_tok, smollm2_tok):
    assert same_vocabulary(gpt2_tok, gpt2_tok)
    assert not same_vocabulary(gpt2_tok, smollm2_tok)


def test_an_unreachable_hub_loads_from_the_cache_only(monkeypatch, tmp_path):
    """Offline, transformers retried for ~50 s before its error: a Hub name is then looked up in the local cache
    only (local_files_only), a local dir as always, and a proxy counts as a way to the Hub."""
    from rectify import hub
    from rectify.lm import LMConfig, LMLoadError, load_tokenizer

    def refused(*args, **kwargs):
        raise OSError("Name or service not known")

    for var in ("HF_HUB_OFFLINE", *hub.PROXY_VARIABLES):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub.socket, "create_connection", refused)
    hub.hub_reachable.cache_clear()
    asked = []

    class Recorder:
        @staticmethod
        def from_pretrained(name, **kwargs):
            asked.append(kwargs)
            raise OSError("not in the cache")

    monkeypatch.setattr("rectify.lm.AutoTokenizer", Recorder)
    try:
        with pytest.raises(LMLoadError, match="may be offline"):
            load_tokenizer(LMConfig(source="hub", name_or_path="someone/some-model"))
        assert asked[-1].get("local_files_only") is True
        assert hub.hub_load_kwargs(tmp_path) == {}   # a local directory never asks the Hub
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
        hub.hub_reachable.cache_clear()
        assert hub.hub_load_kwargs("someone/some-model") == {}
    finally:
        hub.hub_reachable.cache_clear()


def test_a_saved_model_loads_from_a_hydra_lm_config(tmp_path):
    """lm.source=local from a composed (DictConfig) lm config, whose extra is a DictConfig: the from_pretrained
    keywords are merged from both (a dict | DictConfig raised TypeError)."""
    from omegaconf import OmegaConf

    from rectify.lm import same_weights

    model, tok = load_lm(tiny_lm_config("gpt2"))
    model.save_pretrained(tmp_path / "mine")
    tok.save_pretrained(tmp_path / "mine")
    cfg = OmegaConf.create({"source": "local", "name_or_path": str(tmp_path / "mine"), "family": "gpt2",
                            "dtype": "float32", "extra": {"low_cpu_mem_usage": True}})
    loaded, loaded_tok = load_lm(cfg)
    assert same_weights(loaded, model) and len(loaded_tok) == len(tok)
