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


def test_batches_by_length_and_rows():
    items = [(0, "a long prompt here"), (1, "hi"), (2, "mid size"), (3, "hi")]
    assert [i for i, _ in cont.by_length(items)] == [1, 3, 2, 0]
    assert cont.prompts_per_batch(256, 8) == 32 and cont.prompts_per_batch(5, 8) == 1
    assert cont.batch_rows("auto") == cont.AUTO_ROWS["cpu"] and cont.batch_rows("auto", "gpu") == cont.AUTO_ROWS["cuda"]
    assert cont.batch_rows(80) == 80


def test_top_k_one_is_greedy_and_min_new_tokens_holds(tiny_gpt2):
    model, tok = tiny_gpt2
    outs = []
    for seed in (1, 2):
        m = cont.ContinuationModule(sampling(top_k=1, seed=seed, min_new_tokens=5), model=model, tokenizer=tok)
        m.setup("predict")
        outs.append(m.predict_step({"index": [0], "text": ["You are such a"]}))
    assert outs[0] == outs[1] and len({g["text"] for g in outs[0][0]["generations"]}) == 1


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
    first = cont.by_length([(i, p["prompt"]["text"]) for i, p in enumerate(PROMPTS)])[:3]  # shortest first
    assert cont.done_indices(shards) == {i for i, _ in first}
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


def test_a_gpu_trainer_without_a_gpu_is_a_config_error(tmp_path, monkeypatch):
    from rectify.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="build.continuations.trainer.accelerator=gpu .* no CUDA GPU"):
        cont.make_trainer({"accelerator": "gpu"}, tmp_path / "shards")
