"""The remote generator against this project's server (loopback, tiny models): parity with the local sampler,
caps on the sampled frequency, retries, and generate.py's resume through the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rectify.decoding import DecodingConfig, RectifiedSampler
from rectify.decoding.runner import run_generation
from rectify.remote import RemoteAPIError, RemoteConfig, RemoteSampler
from rectify.serving import running_server
from tests.test_decoding_sampler import one_thread  # noqa: F401 - the autouse one-thread fixture
from tests.test_serve import inject_faults, tiny_app, tiny_generator
from tests.toy_models import constant_q_model

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Hello there, how are", "x", "The quick brown fox"]


@pytest.fixture(scope="module")
def plain_server():
    """A plain server (no Q_D) that returns the whole vocabulary's logprobs when asked, with fault injection."""
    gen, tok = tiny_generator()
    app = tiny_app(gen, tok, max_logprobs=None)
    faults = inject_faults(app)
    with running_server(app) as url:
        yield url + "/v1", gen, tok, faults


def remote(url: str, tok, vm=None, k: int = 20, transport=None, **dec) -> RemoteSampler:
    cfg = RemoteConfig(base_url=url, top_logprobs=k, backoff_s=0.01, max_retries=3)
    return RemoteSampler(cfg, tok, vm, DecodingConfig(**dec), transport)


def test_full_vocabulary_plain_reproduces_the_local_sampler(plain_server):
    url, gen, tok, _ = plain_server
    dec = {"rectify": False, "max_new_tokens": 3, "num_return_sequences": 2, "temperature": 0.8}
    got = remote(url, tok, k=len(tok), **dec).generate(PROMPTS[:2], seeds=[5, 6])
    want = RectifiedSampler(gen, tok, None, DecodingConfig(**dec)).generate(PROMPTS[:2], seeds=[5, 6])
    assert torch.equal(got.sequences, want.sequences) and got.texts == want.texts
    assert got.stats["dropped_mass"] < 1e-4 * got.row_steps and got.stats["unmapped_tokens"] == 0


def test_rectified_frequency_of_a_forbidden_token_matches_its_cap(plain_server):
    """200 first tokens sampled from the API's top-20: the top token appears at its cap's rate, within noise."""
    url, gen, tok, _ = plain_server
    prompt = "Hello there, how are"
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(gen(ids).logits[0, -1], -1)
    top = int(probs.argmax())
    assert float(probs[top]) > 0.5  # without rectification it dominates
    cap, eps, rows = 0.2, 0.1, 200
    q = torch.zeros(len(tok))
    q[top] = cap - 1 + eps
    vm = constant_q_model("llama", q)
    res = remote(url, tok, vm, k=20, max_new_tokens=1, num_return_sequences=rows, epsilon=eps).generate(
        [prompt], seeds=[0])
    sd = (cap * (1 - cap) / rows) ** 0.5
    assert abs(float((res.sequences[:, 0] == top).float().mean()) - cap) < 4 * sd
    assert res.stats["requests"] == 3  # GET /models, the tokenizer probe, then one POST: the 200 rows share the prompt
    top20 = float(probs.topk(20).values.sum())
    assert res.stats["dropped_mass"] == pytest.approx(rows * (1 - top20), rel=1e-3)  # reported per row-step


def test_retries_on_429_and_503_then_a_clear_error(plain_server):
    url, gen, tok, faults = plain_server
    dec = {"rectify": False, "max_new_tokens": 2}
    clean = remote(url, tok, **dec).generate(PROMPTS, seeds=1)
    faults.extend([429, 503, 503])
    retried = remote(url, tok, **dec).generate(PROMPTS, seeds=1)
    assert retried.stats["retries"] == 3 and not faults
    assert torch.equal(retried.sequences, clean.sequences)
    faults.extend([503] * 4)  # max_retries=3: the fourth failure is final
    with pytest.raises(RemoteAPIError, match="failed 4 times.*503"):
        remote(url, tok, **dec).generate(PROMPTS, seeds=1)
    faults.clear()
    faults.append(401)
    with pytest.raises(RemoteAPIError, match="refused.*401.*not retried"):
        remote(url, tok, **dec).generate(PROMPTS, seeds=1)
    assert not faults


def generate_cfg(tmp_path: Path, url: str, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("generate", overrides=[
            "lm=openai_api", f"lm.base_url={url}", "lm.tokenizer=smollm2", "lm.backoff_s=0.01", "lm.max_retries=2",
            f"prompts_path={tmp_path / 'p.jsonl'}", f"output_path={out}", f"paths.output_dir={tmp_path}",
            "decoding=plain", "decoding.num_return_sequences=2", "decoding.max_new_tokens=3", *overrides])


def test_generate_script_through_the_api_resumes_without_duplicates(tmp_path, plain_server):
    url, _, _, faults = plain_server
    with open(tmp_path / "p.jsonl", "w") as f:
        for i, p in enumerate(PROMPTS + ["Why"]):
            f.write(json.dumps({"prompt": {"text": p}, "source": f"x:{i}"}) + "\n")
    full = tmp_path / "full.jsonl"
    run_generation(generate_cfg(tmp_path, url, full, "batch_size=2"))
    expected = [json.loads(x) for x in full.read_text().splitlines()]
    assert [len(r["generations"]) for r in expected] == [2, 2, 2, 2]

    out = tmp_path / "killed.jsonl"
    faults.extend(["pass"] * 5 + [400])  # 3 steps per prompt: dies in the second prompt
    with pytest.raises(RemoteAPIError, match="400"):
        run_generation(generate_cfg(tmp_path, url, out, "batch_size=1"))
    assert len(out.read_text().splitlines()) == 1
    with open(out, "a") as f:
        f.write('{"prompt": {"text": "half a li')  # and a kill in the middle of a write
    meta = run_generation(generate_cfg(tmp_path, url, out, "batch_size=3"))
    assert [json.loads(x) for x in out.read_text().splitlines()] == expected  # no duplicates, same samples
    counts = meta["counts"]
    assert counts["prompts"] == 4 and counts["unmapped_tokens"] == 0 and 0 < counts["dropped_mass"] < counts["row_steps"]


def test_an_api_with_another_tokenizer_is_refused_before_generating(plain_server, gpt2_tok):
    """The server's LM has SmolLM2's tokenizer; a sampler holding GPT-2's would send and read ids that stand for
    other tokens (only a few ids fall outside the vocabulary: no error would show). Its probe count differs: refused
    before any step; lm.check_tokenizer=false skips the check (a run of garbage, as the user asked)."""
    from rectify.decoding.sampler import VocabularyMismatch

    url, _, tok, _ = plain_server
    dec = DecodingConfig(rectify=False, max_new_tokens=2)
    with pytest.raises(VocabularyMismatch, match="counts .* tokens in a probe text") as err:
        RemoteSampler(RemoteConfig(base_url=url, backoff_s=0.01), gpt2_tok, None, dec).generate(["Hello"], seeds=0)
    assert "lm.check_tokenizer=false" in str(err.value)
    unchecked = RemoteSampler(RemoteConfig(base_url=url, check_tokenizer=False), gpt2_tok, None, dec)
    assert unchecked.generate(["Hello"], seeds=0).stats["requests"] == 1 + 2  # /models, two steps: no probe
    same = RemoteSampler(RemoteConfig(base_url=url), tok, None, dec)
    assert same.generate(["Hello"], seeds=0).stats["requests"] == 1 + 1 + 2  # /models, the probe, two steps
