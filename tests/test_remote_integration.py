"""The remote generator against the server running the bundled SmolLM2 (``make test-integration``)."""

from __future__ import annotations

import pytest
import torch

from rectify.decoding import DecodingConfig, RectifiedSampler
from rectify.lm import LMConfig, load_lm
from rectify.remote import RemoteConfig, RemoteSampler
from rectify.serving import running_server
from tests.test_serve import tiny_app
from tests.toy_models import random_q_model

pytestmark = pytest.mark.integration
PROMPTS = ["The weather today is", "You are such a"]


@pytest.fixture(scope="module")
def smollm2_server():
    gen, tok = load_lm(LMConfig(source="smollm2"))
    with running_server(tiny_app(gen.eval(), tok, max_logprobs=20)) as url:
        yield url + "/v1", gen, tok


def test_top20_remote_equals_local_top_k_20(smollm2_server):
    """Renormalised top-20 logprobs from the API = the local sampler's top_k=20: same tokens, same seeds."""
    url, gen, tok = smollm2_server
    dec = DecodingConfig(rectify=False, top_k=20, max_new_tokens=6, num_return_sequences=2)
    got = RemoteSampler(RemoteConfig(base_url=url, top_logprobs=20), tok, None, dec).generate(PROMPTS, seeds=3)
    want = RectifiedSampler(gen, tok, None, dec).generate(PROMPTS, seeds=3)
    assert torch.equal(got.sequences, want.sequences), (got.texts, want.texts)


def test_rectified_remote_smollm2_runs_with_a_local_q(smollm2_server):
    url, _, tok = smollm2_server
    dec = DecodingConfig(epsilon=0.9, max_new_tokens=4, num_return_sequences=2)
    res = RemoteSampler(RemoteConfig(base_url=url, top_logprobs=20), tok, random_q_model("llama"), dec).generate(
        PROMPTS, seeds=0)
    assert len(res.texts) == 4 and res.row_steps > 0 and res.stats["unmapped_tokens"] == 0
    assert 0 < res.stats["dropped_mass"] < res.row_steps
