"""scripts/demo.py's flow with the scripts stood in for (no models): dev runs for plain and every candidate, select
on dev, test runs for plain and the chosen rule only (with the overrides recorded on dev), the summary printed
and written, the report opening with it, and a rerun that skips every finished stage. The real select and report
code runs; the stand-ins write what generate.py / evaluate.py would."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rectify.data.eval_split import ensure_eval_split
from rectify.data.jsonl import read_jsonl, write_jsonl_atomic
from rectify.decoding.input_digest import input_digests
from rectify.report import write_report
from rectify.selection import Criterion, write_selection
from tests.eval_fixtures import write_eval

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)

# (Toxicity Probability under profanity_svm / jigsaw_lstm_tcc, under hatesonar, perplexity) of each rule
RESULTS = {"plain": (0.40, 0.40, 50.0), "eps_0.1": (0.30, 0.40, 51.0), "eps_0.3": (0.35, 0.40, 50.5),
           "q4_eps_0.05": (0.15, 0.35, 55.0), "q8_eps_0.05": (0.05, 0.10, 70.0)}


def generate_config(overrides: list[str]) -> dict:
    """The config generate.py records in its meta file for these overrides (paths, which need a Hydra run, left out)."""
    keep = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("generate", overrides=keep)
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items() if k != "paths"}


def hydra_list(v: str) -> list[str]:
    return v.strip("[]").split(",") if v.strip("[]") else []


class Stages:
    """Stand-ins for the scripts, by name; each call recorded as (script, overrides)."""

    def __init__(self, data_dir: Path):
        self.data_dir, self.calls = data_dir, []

    def __call__(self, title, script, overrides, timings):
        self.calls.append((script, list(overrides)))
        timings[title] = 0.0
        kv = dict(o.split("=", 1) for o in overrides)
        getattr(self, script.removesuffix(".py"))(kv, overrides)

    def build_data(self, kv, overrides):
        recs = [{"prompt": {"text": f"p{i}", "toxicity": 0.9 if i % 5 == 0 else 0.1}, "source": f"t.csv:{i}"}
                for i in range(30)]
        write_jsonl_atomic(self.data_dir / "prompts_eval.jsonl", recs)
        ensure_eval_split(self.data_dir)

    def train(self, kv, overrides):
        (Path(kv["hydra.run.dir"]) / "value_model").mkdir(parents=True)
        (Path(kv["hydra.run.dir"]) / "value_model" / "value_config.json").write_text("{}")

    def generate(self, kv, overrides):
        out, k = Path(kv["output_path"]), int(kv["decoding.num_return_sequences"])
        prompts = read_jsonl(kv["prompts_path"])[: None if kv["limit"] == "null" else int(kv["limit"])]
        write_jsonl_atomic(out, [p | {"generations": [{"text": "x"}] * k} for p in prompts])
        config = generate_config(overrides)
        Path(f"{out}.meta.json").write_text(json.dumps({"config": config, "input_digests": input_digests(config)}))
        (Path(kv["hydra.run.dir"]) / ".hydra").mkdir(parents=True, exist_ok=True)
        (Path(kv["hydra.run.dir"]) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    def evaluate(self, kv, overrides):
        for run in map(Path, hydra_list(kv["eval.input"])):
            tox, hate, ppl = RESULTS[run.name]
            gen = run / "generations.jsonl"
            recs = read_jsonl(gen)
            n = sum(r["prompt"]["toxicity"] < 0.5 for r in recs)
            write_eval(gen, {"profanity_svm": (tox, tox), "jigsaw_lstm_tcc": (tox, tox), "hatesonar": (hate, hate)},
                       ppl=ppl, method="plain" if run.name == "plain" else "rectified", n_prompts=n,
                       k=len(recs[0]["generations"]))

    def train_reward_model(self, kv, overrides):
        (Path(kv["reward.export_dir"])).mkdir(parents=True)
        (Path(kv["reward.export_dir"]) / "config.json").write_text("{}")

    def select_rule(self, kv, overrides):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides([o for o in overrides if o.startswith("select.")])
        crit = {o.key_or_group.split(".", 1)[1]: o.value() for o in parsed if o.key_or_group != "select.runs"}
        assert crit["judges"] == ["profanity_svm", "jigsaw_lstm_tcc", "hatesonar"] and crit["aggregate"] == "min"
        write_selection(kv["select.inputs"], Criterion.from_any(crit), kv["select.output_dir"],
                        hydra_list(kv["select.runs"]))

    def report(self, kv, overrides):
        from rectify.report.targets import active_targets

        raw = {k.removeprefix("report.targets."): None if v == "null" else float(v) for k, v in kv.items()
               if k.startswith("report.targets.")}
        write_report(hydra_list(kv["report.inputs"]), kv["report.output_dir"], targets=active_targets(raw),
                     preamble=Path(kv["report.preamble"]).read_text())


@pytest.fixture()
def cfg(tmp_path):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        c = compose("demo", overrides=[f"out_dir={tmp_path}/demo", f"paths.data_dir={tmp_path}/data",
                                       "generate.dev_limit=10", "generate.test_limit=12", "generate.test_samples=3"])
    # this test's own rules (RESULTS), whatever the demo's candidates are
    OmegaConf.update(c, "generate.candidates", {
        "eps_0.1": ["decoding.epsilon=0.1"], "eps_0.3": ["decoding.epsilon=0.3"],
        "q4_eps_0.05": ["decoding.epsilon=0.05", "decoding.q_scale=4"],
        "q8_eps_0.05": ["decoding.epsilon=0.05", "decoding.q_scale=8"]}, merge=False)
    (tmp_path / "data" / "demo").mkdir(parents=True)
    return c


def test_dev_select_test_summary_report_and_resume(cfg, tmp_path, capsys):
    stages = Stages(tmp_path / "data" / "demo")
    text = demo.Demo(cfg, runner=stages)()
    out = tmp_path / "demo"
    scripts = [s for s, _ in stages.calls]
    assert scripts == ["build_data.py", "train.py", *["generate.py"] * 5, "evaluate.py", "select_rule.py",
                       "generate.py", "generate.py", "evaluate.py", "report.py"]
    gens = {Path(dict(o.split("=", 1) for o in ov)["output_path"]).parent.relative_to(out).as_posix(): ov
            for s, ov in stages.calls if s == "generate.py"}
    assert set(gens) == {f"dev/generations/{n}" for n in RESULTS} | {"test/generations/plain",
                                                                       "test/generations/q4_eps_0.05"}
    vm = f"value_model_path={out}/train/value_model"
    assert gens["dev/generations/q4_eps_0.05"][5:9] == ["decoding=rectified", "decoding.epsilon=0.05",
                                                        "decoding.q_scale=4", vm]
    test_rule = gens["test/generations/q4_eps_0.05"]
    assert "prompts_path=" + str(tmp_path / "data/demo/prompts_test.jsonl") in test_rule and "limit=12" in test_rule
    assert test_rule[5:9] == ["decoding=rectified", "decoding.epsilon=0.05", "decoding.q_scale=4", vm]
    assert "decoding.num_return_sequences=3" in test_rule and "decoding=plain" in gens["test/generations/plain"]
    # by default dev draws on its non-toxic prompts only (all the selection reads), test on every prompt
    assert gens["dev/generations/plain"][:2] == [f"prompts_path={out}/dev/prompts_nontoxic.jsonl", "limit=null"]

    assert json.loads((out / "selected.json").read_text())["selected"] == "q4_eps_0.05"
    assert (out / "dev_table.md").is_file() and (out / "summary.md").read_text() == text
    assert "the targets hold under 2 of 3 judges" in text and "Test prompts: " in text
    report = (out / "report.md").read_text()
    assert report.startswith(text.rstrip() + "\n\n![trade-off](tradeoff.png)")
    # the report checks the summary's bar (the demo's targets), not report.yaml's headline set
    report_call = next(ov for s, ov in stages.calls if s == "report.py")
    assert {"report.targets.tox_prob_cut=0.4", "report.targets.max_ppl_increase=0.25", "report.targets.emt_cut=null",
            "report.targets.max_dist3_drop=null"} <= set(report_call)
    line = next(ln for ln in report.splitlines() if ln.startswith("Targets: "))
    assert sorted(line.removeprefix("Targets: ").rstrip(".").split(", ")) == ["max_ppl_increase 0.25",
                                                                              "tox_prob_cut 0.4"]

    stages.calls.clear()
    demo.Demo(cfg, runner=stages)()
    assert [s for s, _ in stages.calls] == ["build_data.py", "select_rule.py", "report.py"]  # the rest is done
    assert "(skipped: " in capsys.readouterr().out


def test_candidates_complete_their_overrides_and_refuse_the_baseline_name(tmp_path):
    gen = OmegaConf.create({"candidates": {"a": ["decoding.epsilon=0.1"], "gone": None,
                                           "top_p": ["decoding=plain", "decoding.top_p=0.9"],
                                           "other_qd": ["decoding.epsilon=0.2", "value_model_path=/q"]}})
    got = demo.candidates(gen, Path("/vm"))
    assert got == {"a": ["decoding=rectified", "decoding.epsilon=0.1", "value_model_path=/vm"],
                   "top_p": ["decoding=plain", "decoding.top_p=0.9"],
                   "other_qd": ["decoding=rectified", "decoding.epsilon=0.2", "value_model_path=/q"]}
    with pytest.raises(ValueError, match="baseline"):
        demo.candidates(OmegaConf.create({"candidates": {"plain": []}}), Path("/vm"))


def test_nontoxic_subsets_generate_only_on_the_non_toxic_of_the_first_n(cfg, tmp_path):
    assert cfg.generate.prompt_subset == "nontoxic" and cfg.generate.test_prompt_subset == "all"   # the defaults
    OmegaConf.update(cfg, "generate.test_prompt_subset", "nontoxic")
    stages = Stages(tmp_path / "data" / "demo")
    demo.Demo(cfg, runner=stages)()
    out = tmp_path / "demo"
    gens = [dict(o.split("=", 1) for o in ov) for s, ov in stages.calls if s == "generate.py"]
    dev = [g for g in gens if "/dev/" in g["output_path"]]
    test = [g for g in gens if "/test/" in g["output_path"]]
    assert {g["prompts_path"] for g in dev} == {str(out / "dev" / "prompts_nontoxic.jsonl")}
    assert {g["prompts_path"] for g in test} == {str(out / "test" / "prompts_nontoxic.jsonl")}
    assert {g["limit"] for g in gens} == {"null"}
    data = tmp_path / "data" / "demo"
    for split, limit in (("dev", 10), ("test", 12)):
        first = read_jsonl(data / f"prompts_{split}.jsonl")[:limit]
        kept = read_jsonl(out / split / "prompts_nontoxic.jsonl")
        assert kept == [r for r in first if r["prompt"]["toxicity"] < 0.5] and 0 < len(kept) < limit
        assert all(len(r["generations"]) == (4 if split == "dev" else 3)
                   for r in read_jsonl(out / split / "generations" / "plain" / "generations.jsonl"))


def test_a_judge_list_naming_reward_model_trains_it_first_once(cfg, tmp_path):
    OmegaConf.update(cfg, "evaluate.scorers", ["profanity_svm", "jigsaw_lstm_tcc", "hatesonar", "reward_model"])
    OmegaConf.update(cfg, "reward_model_dir", str(tmp_path / "rm"))
    stages = Stages(tmp_path / "data" / "demo")
    demo.Demo(cfg, runner=stages).build_and_train()
    assert [s for s, _ in stages.calls] == ["build_data.py", "train_reward_model.py", "train.py"]
    assert f"reward.export_dir={tmp_path / 'rm'}" in stages.calls[1][1]
    stages.calls.clear()
    demo.Demo(cfg, runner=stages).build_and_train()
    assert [s for s, _ in stages.calls] == ["build_data.py"]   # exported and trained: both skipped


def test_dev_only_stops_after_the_selection_without_touching_test(cfg, tmp_path):
    stages = Stages(tmp_path / "data" / "demo")
    cfg.dev_only = True
    text = demo.Demo(cfg, runner=stages)()
    out = tmp_path / "demo"
    assert [s for s, _ in stages.calls] == ["build_data.py", "train.py", *["generate.py"] * 5, "evaluate.py",
                                            "select_rule.py"]
    assert not any("prompts_test" in o for _, ov in stages.calls for o in ov)
    assert not (out / "test").exists() and not (out / "summary.md").exists()
    assert text.startswith("Chosen on dev: q4_eps_0.05.") and str(out / "dev_table.md") in text


def test_runs_drawn_from_other_prompts_are_set_aside_and_redrawn(cfg, tmp_path, capsys):
    """An earlier demo's dev runs on every prompt (the old default) are moved aside, not resumed into a stop."""
    stages = Stages(tmp_path / "data" / "demo")
    OmegaConf.update(cfg, "generate.prompt_subset", "all")
    demo.Demo(cfg, runner=stages)()
    out = tmp_path / "demo"
    old_plain = read_jsonl(out / "dev" / "generations" / "plain" / "generations.jsonl")
    OmegaConf.update(cfg, "generate.prompt_subset", "nontoxic")
    stages.calls.clear()
    demo.Demo(cfg, runner=stages)()
    redrawn = [dict(o.split("=", 1) for o in ov)["output_path"] for s, ov in stages.calls if s == "generate.py"]
    assert sorted(Path(p).parent.name for p in redrawn) == sorted(RESULTS)   # every dev run, no test run
    assert all("/dev/" in p for p in redrawn)
    moved = sorted((out / "dev" / "replaced").iterdir())
    assert sorted(m.name.rsplit("-", 1)[0] for m in moved) == sorted(RESULTS)
    plain = next(m for m in moved if m.name.startswith("plain-"))
    assert read_jsonl(plain / "generations.jsonl") == old_plain   # nothing lost
    assert len(read_jsonl(out / "dev" / "generations" / "plain" / "generations.jsonl")) < len(old_plain)
    assert "holds 10 prompts, more than the 8 asked for: an earlier demo's run, moved to" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["copied", "moved"])
def test_a_copied_or_moved_demo_folder_is_reused_not_redrawn(cfg, tmp_path, capsys, how):
    """The runs record their prompts and Q_D by path; a demo folder copied or moved elsewhere names the same bytes
    at new paths, so nothing is set aside or drawn again. A changed Q_D is still caught."""
    import shutil

    stages = Stages(tmp_path / "data" / "demo")
    demo.Demo(cfg, runner=stages)()
    (shutil.copytree if how == "copied" else shutil.move)(str(tmp_path / "demo"), str(tmp_path / "elsewhere"))
    OmegaConf.update(cfg, "out_dir", str(tmp_path / "elsewhere"))
    stages.calls.clear()
    capsys.readouterr()
    demo.Demo(cfg, runner=stages)()
    assert [s for s, _ in stages.calls] == ["build_data.py", "select_rule.py", "report.py"]
    assert "another config" not in capsys.readouterr().out
    summary = (tmp_path / "elsewhere" / "summary.md").read_text()
    assert f"value_model_path={tmp_path / 'elsewhere' / 'train' / 'value_model'}`" in summary   # "Use it": here
    assert f"{tmp_path / 'demo'}/" not in summary
    assert not (tmp_path / "elsewhere" / "dev" / "replaced").exists()

    (tmp_path / "elsewhere" / "train" / "value_model" / "value_config.json").write_text('{"edited": 1}')
    demo.Demo(cfg, runner=stages)()
    assert "(value_model_path: " in capsys.readouterr().out and (tmp_path / "elsewhere" / "dev" / "replaced").is_dir()


def test_a_run_drawn_under_another_rule_is_set_aside_not_reused(cfg, tmp_path, capsys):
    """A finished run whose recorded decoding differs from what its overrides compose now (here: recorded before
    ``decoding.stop_neutral`` existed) is redrawn, not reused as if the current rule had drawn it."""
    stages = Stages(tmp_path / "data" / "demo")
    demo.Demo(cfg, runner=stages)()
    out = tmp_path / "demo"
    meta = out / "dev" / "generations" / "eps_0.3" / "generations.jsonl.meta.json"
    record = json.loads(meta.read_text())
    del record["config"]["decoding"]["stop_neutral"]
    meta.write_text(json.dumps(record))
    stages.calls.clear()
    capsys.readouterr()
    demo.Demo(cfg, runner=stages)()
    redrawn = [dict(o.split("=", 1) for o in ov)["output_path"] for s, ov in stages.calls if s == "generate.py"]
    assert [Path(p).parent.name for p in redrawn] == ["eps_0.3"]
    assert "was drawn under another config (decoding.stop_neutral: False -> True)" in capsys.readouterr().out
    assert [m.name.rsplit("-", 1)[0] for m in (out / "dev" / "replaced").iterdir()] == ["eps_0.3"]


def test_a_smaller_limit_sets_runs_aside_a_larger_one_resumes_them(cfg, tmp_path):
    stages = Stages(tmp_path / "data" / "demo")
    demo.Demo(cfg, runner=stages)()   # test runs: the first 12 test prompts
    out = tmp_path / "demo"
    test_runs = lambda: [s for s, ov in stages.calls if s == "generate.py" and "/test/" in str(ov)]  # noqa: E731
    for limit, set_aside in ((15, False), (8, True)):
        OmegaConf.update(cfg, "generate.test_limit", limit)
        stages.calls.clear()
        demo.Demo(cfg, runner=stages)()
        assert len(test_runs()) == 2   # plain and the chosen rule, redrawn to the new limit
        assert (out / "test" / "replaced").is_dir() == set_aside
        assert len(read_jsonl(out / "test" / "generations" / "plain" / "generations.jsonl")) == limit


def test_sigterm_to_the_demo_stops_its_running_stage(tmp_path):
    """`kill <demo pid>` used to end the demo alone, leaving its stage writing (a rerun then interleaved a second
    writer's lines into the same file): the stage must go down with it, and the demo end with one line (exit 130)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    stage = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    code = (f"import importlib.util, subprocess, sys\n"
            f"spec = importlib.util.spec_from_file_location('d', {str(ROOT / 'scripts' / 'demo.py')!r})\n"
            f"d = importlib.util.module_from_spec(spec); spec.loader.exec_module(d)\n"
            f"d.stop_stages_on_sigterm()\n"
            f"d.run_main(lambda: subprocess.run([sys.executable, '-c', {stage!r}]), 'rerun to continue')\n")
    demo_proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        stage_pid = int(demo_proc.stdout.readline())
        demo_proc.send_signal(signal.SIGTERM)
        assert demo_proc.wait(timeout=60) == 130
        err = demo_proc.stderr.read()   # one line saying what to do, not a traceback
        assert "interrupted: rerun to continue" in err and "Traceback" not in err
        for _ in range(100):   # the stage is killed and reaped by the demo before it exits
            try:
                os.kill(stage_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(stage_pid, signal.SIGKILL)
            raise AssertionError("the stage outlived the demo")
    finally:
        demo_proc.kill()


def test_the_walkthrough_is_printed_once_and_kept_in_demo_log(tmp_path, capsys):
    """demo_run/demo.log was empty (the demo printed, Hydra logged nothing): under the demo's own logging config
    each message reaches the console once and the log file too."""
    import logging
    import logging.config

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        c = compose("demo", overrides=[f"out_dir={tmp_path}"], return_hydra_config=True)
    logging_cfg = OmegaConf.to_container(c.hydra.job_logging, resolve=False)
    logging_cfg["handlers"]["file"]["filename"] = str(tmp_path / "demo.log")
    before = logging.getLogger().handlers[:]
    logging.config.dictConfig(logging_cfg)
    try:
        demo.say("=== a stage")
        for h in logging.getLogger("demo").handlers:
            h.flush()
    finally:
        for h in logging.getLogger("demo").handlers + logging.getLogger().handlers:
            h.close()
        logging.getLogger("demo").handlers.clear()
        logging.getLogger().handlers[:] = before
    assert capsys.readouterr().out.count("=== a stage") == 1
    assert "=== a stage" in (tmp_path / "demo.log").read_text()
