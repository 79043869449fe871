"""Continuations: per-row seeded sampling, resumable shard writing, DDP sharding with 2 CPU processes."""

from __future__ import annotations

import pytest
import torch

from rectify.data import continuations as cont
from rectify.data.jsonl import iter_jsonl, read_jsonl
from tests.conftest import tiny_lm_config

PROMPTS = [{"prompt": {"text": t, "toxicity": 0.0}, "source": f"p:{i}", "split": "train"}
           for i, t in enumerate(["You are such a", "The weather today", "I hate it when people",
                                  "Hello", "What on earth is going on with", "Nobody asked for",
                                  "Go", "This is the worst"])]


def sampling(**kw) -> cont.SamplingConfig:
    return cont.SamplingConfig(**{"k": 3, "max_new_tokens": 5, "seed": 11, **kw})


def test_rowwise_sampler_top_k_min_tokens_and_seeds():
    torch.manual_seed(0)
    scores = torch.randn(4, 50)
    scores[3] = scores[0]
    cfg = sampling(top_k=3, min_new_tokens=2)
    eos = int(scores[0].argmax())  # forbid the most likely token of row 0 as "EOS"
    out = cont.RowwiseSampler([1, 2, 3, 1], prompt_len=4, cfg=cfg, eos_ids=[eos], device=torch.device("cpu"))(
        torch.zeros(4, 4, dtype=torch.long), scores.clone())
    chosen = out.argmax(-1)
    assert torch.isfinite(out).sum(-1).tolist() == [1, 1, 1, 1]
    masked = scores.clone()
    masked[:, eos] = float("-inf")
    top3 = masked.topk(3, dim=-1).indices
    assert all(int(chosen[i]) in top3[i].tolist() for i in range(4))
    assert int(chosen[0]) != eos
    assert chosen[0] == chosen[3]  # same seed, same logits, same draw
    # top_p small enough keeps only the argmax
    out = cont.RowwiseSampler([5] * 4, 0, sampling(top_p=1e-6), [], torch.device("cpu"))(
        torch.zeros(4, 0, dtype=torch.long), scores.clone())
    assert out.argmax(-1).tolist() == scores.argmax(-1).tolist()


def test_continuations_do_not_depend_on_batching(tiny_gpt2):
    model, tok = tiny_gpt2
    m = cont.ContinuationModule(sampling(), model=model, tokenizer=tok)
    m.setup("predict")
    both = m.predict_step({"index": [0, 1], "text": ["You are such a", "Hello there my old friend, I"]})
    alone = m.predict_step({"index": [1], "text": ["Hello there my old friend, I"]})
    assert both[1] == alone[0]
    assert len(both[0]["generations"]) == 3
    assert len({g["text"] for g in both[0]["generations"]}) > 1  # k different samples
    other_seed = cont.ContinuationModule(sampling(seed=12), model=model, tokenizer=tok)
    other_seed.setup("predict")
    assert other_seed.predict_step({"index": [1], "text": ["Hello there my old friend, I"]}) != alone


class Crash(RuntimeError):
    pass


class CrashingModule(cont.ContinuationModule):
    def __init__(self, *a, crash_at: int, **kw):
        super().__init__(*a, **kw)
        self.crash_at = crash_at

    def predict_step(self, batch, batch_idx=0, dataloader_idx=0):
        if batch_idx == self.crash_at:
            raise Crash("killed")
        return super().predict_step(batch, batch_idx, dataloader_idx)


def _trainer(shards):
    return cont.make_trainer({"enable_progress_bar": False}, shards)


def test_killed_generation_resumes_without_duplicates(tmp_path, tiny_gpt2):
    model, tok = tiny_gpt2
    ref = cont.ContinuationModule(sampling(), model=model, tokenizer=tok)
    ref.setup("predict")
    # the uninterrupted reference: all prompts in one batch (batching does not change the samples)
    expected = ref.predict_step({"index": list(range(8)), "text": [p["prompt"]["text"] for p in PROMPTS]})

    shards = tmp_path / "shards"
    with pytest.raises(Crash):
        cont.generate_continuations(PROMPTS, shards, CrashingModule(sampling(), model=model, tokenizer=tok, crash_at=2),
                                    _trainer(shards), batch_size=2)
    shard = shards / "shard-rank0000.jsonl"
    assert len(read_jsonl(shard)) == 4
    shard.write_bytes(shard.read_bytes()[:-30])  # the last line was cut mid-write
    assert cont.done_indices(shards) == {0, 1, 2}
    with pytest.raises(RuntimeError, match="have no continuations yet"):
        cont.merge_shards(shards, PROMPTS, tmp_path / "out.jsonl")
    todo = cont.generate_continuations(PROMPTS, shards, cont.ContinuationModule(sampling(), model=model, tokenizer=tok),
                                       _trainer(shards), batch_size=2)
    assert todo == 5
    idx = [r["index"] for r in iter_jsonl(shard)]
    assert sorted(idx) == list(range(8))  # every prompt exactly once
    cont.merge_shards(shards, PROMPTS, tmp_path / "out.jsonl")
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["prompt"] for r in out] == [p["prompt"] for p in PROMPTS]
    # seeds per prompt: the resumed run samples what an uninterrupted run would have
    assert [r["generations"] for r in out] == [r["generations"] for r in expected]


def test_ddp_predict_with_two_cpu_processes_writes_each_prompt_once(tmp_path):
    prompts = PROMPTS * 2  # 16 prompts: 8 per rank
    shards = tmp_path / "shards"
    module = cont.ContinuationModule(sampling(k=2, max_new_tokens=3), lm_cfg=tiny_lm_config("gpt2"), num_threads=1)
    trainer = cont.make_trainer({"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn",
                                 "enable_progress_bar": False}, shards)
    cont.generate_continuations(prompts, shards, module, trainer, batch_size=3)
    per_rank = {p.name: [r["index"] for r in iter_jsonl(p)] for p in sorted(shards.glob("shard-rank*.jsonl"))}
    assert sorted(per_rank) == ["shard-rank0000.jsonl", "shard-rank0001.jsonl"]
    assert all(per_rank.values())  # both ranks did work
    written = [i for idx in per_rank.values() for i in idx]
    assert sorted(written) == list(range(16))
    assert cont.merge_shards(shards, prompts, tmp_path / "gen.jsonl") == 16


def test_shard_writer_stops_after_saving_the_batch_on_sigterm(tmp_path):
    """Lightning's predict loop ignores SIGTERM; the writer saves the batch in progress, then exits."""
    from types import SimpleNamespace

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    writer = cont.ShardWriter(tmp_path)
    running = SimpleNamespace(global_rank=0, received_sigterm=False)
    writer.write_on_batch_end(running, None, [{"index": 0, "generations": []}], None, None, 0)
    stopping = SimpleNamespace(global_rank=0, received_sigterm=True)
    with pytest.raises(SIGTERMException):
        writer.write_on_batch_end(stopping, None, [{"index": 1, "generations": []}], None, None, 1)
    assert cont.done_indices(tmp_path) == {0, 1}
