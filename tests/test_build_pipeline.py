"""The whole build_data pipeline through its Hydra config (debug=smoke): stages, skipping, resuming, configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rectify.data import build
from rectify.data.jsonl import read_jsonl
from rectify.data.stages import StageConfigMismatch

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def compose_build(*overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="build_data", overrides=list(overrides))


def test_default_and_paper_configs_compose():
    cfg = compose_build()
    b = cfg.build
    assert b.lm.source == "smollm2" and cfg.scorer._target_.endswith("tox_block_scorer")
    assert b.prompts.insults_splits.train == "train" and b.prompts.insults_splits.eval == "test"
    assert b.out_dir.endswith("data/offline")
    paper = compose_build("data=paper").build
    assert (paper.continuations.k, paper.continuations.max_new_tokens) == (25, 20)
    assert (paper.prompts.drop_nontoxic, paper.prompts.split_mode, paper.assemble.mode) == (0.9, "first_tokens", "most")
    assert paper.assemble.threshold == 0.5 and paper.assemble.val_fraction == 0.1


def test_trainer_group_feeds_the_predict_trainer():
    cfg = compose_build("trainer=ddp_sim")
    kw = build.predict_trainer_kwargs(cfg.trainer, cfg.build.continuations.trainer)
    assert (kw["accelerator"], kw["devices"], kw["strategy"]) == ("cpu", 2, "ddp_spawn")
    assert "_target_" not in kw and "default_root_dir" not in kw and kw["enable_progress_bar"] is True
    gpu = build.predict_trainer_kwargs(compose_build("trainer=ddp", "trainer.num_nodes=2").trainer)
    assert (gpu["accelerator"], gpu["strategy"], gpu["num_nodes"]) == ("gpu", "ddp", 2)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One full debug=smoke run, shared: (out_dir, results)."""
    out = tmp_path_factory.mktemp("smoke")
    cfg = compose_build("debug=smoke", f"build.out_dir={out}")
    assert cfg.build.lm.random_init.num_layers == 2
    return out, build.run(cfg.build, "all", trainer=cfg.trainer)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_smoke_pipeline_runs_skips_and_refuses_mixed_configs(smoke_run, tmp_path):
    tmp_path = copy_run(smoke_run[0], tmp_path / "run")
    cfg = compose_build("debug=smoke", f"build.out_dir={tmp_path}")
    res = smoke_run[1]
    assert res["prompts"] == {"train_prompts": 12, "eval_prompts": 6}
    train, val = read_jsonl(tmp_path / "train.json"), read_jsonl(tmp_path / "val.json")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows_train"] == len(train) and summary["rows_val"] == len(val)
    # mode all, k=2 LM samples + the human continuation per prompt, nothing dropped in smoke
    assert len(train) + len(val) == 12 * (2 + 1) == 12 * 2 + summary["human_continuations"]
    assert all(set(r) == {"text", "reward", "prompt_len", "prompt_chars"} and r["reward"][0] in (0, -1) for r in train + val)
    evals = read_jsonl(tmp_path / "prompts_eval.jsonl")
    assert {r["source"].split(":")[0] for r in evals} == {"test_with_solutions.csv"}
    labelled = read_jsonl(tmp_path / "labelled.jsonl")
    assert all("toxicity" in g for r in labelled for g in r["generations"])

    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    again = build.run(cfg.build, "all")
    assert all(again[s]["skipped"] for s in build.STAGES)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()} == mtimes

    # a changed assemble config may not silently mix with the old outputs ...
    changed = compose_build("debug=smoke", f"build.out_dir={tmp_path}", "build.assemble.mode=most").build
    with pytest.raises(StageConfigMismatch, match="assemble"):
        build.run(changed, "assemble")
    # ... but recomputes that stage alone with overwrite, reusing the labels
    res = build.run(changed, "assemble", overwrite=True)
    assert res["assemble"]["rows_train"] + res["assemble"]["rows_val"] == 12 * 2  # most = 2 of k=2


def test_interrupted_labels_stage_resumes(smoke_run, tmp_path):
    tmp_path = copy_run(smoke_run[0], tmp_path / "run")
    cfg = compose_build("debug=smoke", f"build.out_dir={tmp_path}", "build.labels.batch_prompts=5")
    full = (tmp_path / "labelled.jsonl").read_bytes()
    # simulate a kill: two complete records and half of the third, no done marker
    lines = full.splitlines(keepends=True)
    (tmp_path / "labelled.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:20])
    (tmp_path / ".state" / "labels.done.json").unlink()
    res = build.run(cfg.build, "labels")
    assert res["labels"]["prompts"] == 12
    assert (tmp_path / "labelled.jsonl").read_bytes() == full
    assert OmegaConf.select(cfg, "build.scorer_override._target_").endswith("KeywordScorer")


def test_unknown_stage_is_rejected(tmp_path):
    cfg = compose_build("debug=smoke", f"build.out_dir={tmp_path}")
    with pytest.raises(ValueError, match="unknown stage"):
        build.run(cfg.build, "everything")


def test_shards_of_another_config_are_not_reused(smoke_run, tmp_path):
    out = copy_run(smoke_run[0], tmp_path / "run")
    (out / "generations.jsonl").unlink()  # as if killed mid-generation: only shards are left
    (out / ".state" / "continuations.done.json").unlink()
    (out / "generations.shards").mkdir()
    (out / "generations.shards" / "shard-rank0000.jsonl").write_text('{"index": 0, "generations": []}\n')
    other = compose_build("debug=smoke", f"build.out_dir={out}", "build.continuations.max_new_tokens=4").build
    with pytest.raises(StageConfigMismatch, match="continuations"):
        build.run(other, "continuations")


def test_dead_end_assembly_reuses_the_labels(smoke_run, tmp_path):
    out = copy_run(smoke_run[0], tmp_path / "run")
    before = read_jsonl(out / "train.json") + read_jsonl(out / "val.json")
    assert json.loads((out / "summary.json").read_text())["truncate"] == "dead_end"  # the recipe's default
    cfg = compose_build("debug=smoke", f"build.out_dir={out}", "build.assemble.truncate=null").build
    with pytest.raises(StageConfigMismatch, match="assemble"):  # the old rows are not silently kept
        build.run(cfg, "assemble")
    res = build.run(cfg, "assemble", overwrite=True)["assemble"]
    after = read_jsonl(out / "train.json") + read_jsonl(out / "val.json")
    assert res["truncate"] is None and len(after) == len(before)
    for cut, whole in zip(before, after, strict=True):  # the same labels, whole continuations now
        assert cut["reward"] == whole["reward"] and whole["text"].startswith(cut["text"])
        if cut["reward"] == [0]:
            assert whole["text"] == cut["text"]


def test_a_separate_labeller_relabels_without_regenerating(smoke_run, tmp_path):
    out = copy_run(smoke_run[0], tmp_path / "run")
    generations = (out / "generations.jsonl").read_text()
    members = ("[{_target_:rectify.data.keyword_scorer.KeywordScorer},"
               "{_target_:rectify.data.keyword_scorer.KeywordScorer,words:[the,a]}]")
    cfg = compose_build("debug=smoke", f"build.out_dir={out}", "+build.labels.scorer._target_="
                        "rectify.scoring.ensemble.EnsembleScorer", f"+build.labels.scorer.members={members}").build
    with pytest.raises(StageConfigMismatch, match="labels"):  # the old labels are not silently kept
        build.run(cfg, "labels")
    res = build.run(cfg, "labels", overwrite=True)["labels"]
    assert res["labeller"] == "max(keyword,keyword)"
    assert (out / "generations.jsonl").read_text() == generations  # prompts and samples are not redone
    old = [g for r in read_jsonl(smoke_run[0] / "labelled.jsonl") for g in r["generations"]]
    new = [g for r in read_jsonl(out / "labelled.jsonl") for g in r["generations"]]
    assert len(new) == len(old) and all(n["toxicity"] >= o["toxicity"] for o, n in zip(old, new, strict=True))
    assert any(n["toxicity"] > o["toxicity"] for o, n in zip(old, new, strict=True))
    summary = build.run(cfg, "assemble", overwrite=True)["assemble"]
    assert summary["labeller"] == "max(keyword,keyword)"


def test_human_continuations_add_one_labelled_trajectory_per_prompt(smoke_run, tmp_path):
    out = copy_run(smoke_run[0], tmp_path / "run")
    with_human = read_jsonl(out / "train.json") + read_jsonl(out / "val.json")  # the recipe's default: on
    prompts = read_jsonl(out / "prompts_train.jsonl")
    cfg = compose_build("debug=smoke", f"build.out_dir={out}", "build.assemble.human_continuations=false").build
    res = build.run(cfg, "assemble", overwrite=True)["assemble"]
    without = read_jsonl(out / "train.json") + read_jsonl(out / "val.json")
    n_human = sum(bool(p["continuation"]["text"].strip()) for p in prompts)
    assert res["human_continuations"] == 0 and n_human > 0
    assert len(with_human) == len(without) + n_human
    texts = {r["text"] for r in with_human} - {r["text"] for r in without}
    assert any(p["prompt"]["text"] + p["continuation"]["text"] in texts for p in prompts)


def test_human_continuations_off_keeps_the_old_fingerprint():
    on = build.Pipeline(compose_build("debug=smoke").build).fp["assemble"]
    off = build.Pipeline(compose_build("debug=smoke", "build.assemble.human_continuations=false").build).fp["assemble"]
    cfg = compose_build("debug=smoke", "build.assemble.human_continuations=false").build
    OmegaConf.set_struct(cfg, False)
    del cfg.assemble["human_continuations"]
    older = build.Pipeline(cfg).fp["assemble"]
    assert off == older != on


def test_a_users_csv_is_fingerprinted_by_content(tmp_path):
    """Editing one's own CSV in place (same path) must not leave the old prompts silently reused; the bundled
    insults data (no paths) keeps the fingerprint it always had."""
    from rectify.data.stages import file_digests

    csv = tmp_path / "mine.csv"
    csv.write_text("comment_text,toxic\nyou are kind,0\n")

    def prompts_fp(*overrides: str) -> str:
        cfg = compose_build("debug=smoke", f"build.out_dir={tmp_path / 'out'}", *overrides).build
        return build.Pipeline(cfg).fp["prompts"]

    mine = ("build.prompts.source=jigsaw_csv", f"build.prompts.paths.train={csv}", f"build.prompts.paths.eval={csv}")
    before = prompts_fp(*mine)
    csv.write_text("comment_text,toxic\nyou are kind,0\nyou are awful,1\n")
    assert prompts_fp(*mine) != before
    assert file_digests({"train": None, "eval": None}) == {}
    assert file_digests({"train": tmp_path / "missing.csv"}) == {"train": None}
    insults = compose_build("debug=smoke", f"build.out_dir={tmp_path / 'out'}").build
    p = build._plain(insults)["prompts"]
    assert build.Pipeline(insults).fp["prompts"] == build.fingerprint(
        {k: v for k, v in p.items() if k not in ("batch_size", "eval_split")}, build._plain(insults)["seed"],
        build._plain(build.scorer_cfg(build._plain(insults))), None)


def test_useless_data_is_named_in_a_warning():
    assert build.stage_warnings("prompts", {"train_prompts": 10, "eval_prompts": 0})[0].startswith(
        "no evaluation prompts")
    assert build.stage_warnings("assemble", {"rows_train": 40, "toxic_train": 0})[0].startswith(
        "no toxic trajectory")
    assert build.stage_warnings("assemble", {"rows_train": 40, "toxic_train": 9}) == []
    assert build.stage_warnings("prompts", {"train_prompts": 10, "eval_prompts": 6, "skipped": True}) == []
