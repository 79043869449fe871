"""scripts/evaluate.py and rectify.evaluation.pipeline end to end on tiny generations files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rectify.errors import InputError
from rectify.evaluation.generations import GenerationsFormatError, read_generations
from rectify.evaluation.pipeline import (
    EvalOptions,
    Lazy,
    ScorerOutputError,
    ScorerSpec,
    describe_run,
    evaluate_file,
    results_paths,
)
from rectify.evaluation.runner import run_evaluation
from rectify.evaluation.summary import SummaryConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


class KeywordScorer:
    """Fake scorer: 0.9 if the text has a bad word, 0.5 for 'borderline', else 0.1; counts texts scored."""

    name = "keyword"
    calls: list[int] = []

    def __init__(self, **_):
        pass

    def __call__(self, texts):
        KeywordScorer.calls.append(len(texts))
        return np.array([0.9 if ("idiot" in t or "stupid" in t) else 0.5 if "borderline" in t else 0.1 for t in texts])


def write_generations(path: Path, records: list[tuple[str, float | None, list[str]]], meta: dict | None = None,
                      overrides: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for text, tox, gens in records:
            fh.write(json.dumps({"prompt": {"text": text, "toxicity": tox}, "generations": [{"text": g} for g in gens]}) + "\n")
    if meta is not None:
        Path(str(path) + ".meta.json").write_text(json.dumps(meta))
    if overrides is not None:
        (path.parent / ".hydra").mkdir(exist_ok=True)
        (path.parent / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return path


RECORDS = [
    ("A calm prompt", 0.1, [" have a nice day", " you idiot", ""]),  # toxic sample -> counts
    ("Another calm one", 0.2, [" the cat sat", " borderline case", " the cat ran"]),  # tie at 0.5 -> toxic
    ("Quiet prompt", 0.3, [" lovely weather", " lovely food", " nice"]),
    ("You stupid", 0.9, [" stupid stupid", " ok", " fine"]),
    ("No score prompt", None, [" hello there", " hi", " hey"]),
]


def spec() -> ScorerSpec:
    return ScorerSpec(name="keyword", fingerprint="v1", scorer=Lazy(KeywordScorer))


def test_evaluate_file_by_hand(tmp_path):
    path = write_generations(tmp_path / "gen.jsonl", RECORDS,
                             meta={"method": "rectified", "decoding": {"epsilon": 0.2}, "dead_end_fallbacks": 5, "steps": 200})
    opts = EvalOptions(summary=SummaryConfig(bootstrap_n=200), progress=False)
    rows = {r["subset"]: r for r in evaluate_file(path, [spec()], None, opts)}
    assert set(rows) == {"nontoxic", "toxic", "all"}
    nt = rows["nontoxic"]
    assert nt["n_prompts"] == 3 and nt["k"] == 3 and nt["n_generations"] == 9
    assert nt["tox_prob"] == pytest.approx(2 / 3)  # the 0.5 tie counts as toxic
    assert nt["emt"] == pytest.approx((0.9 + 0.5 + 0.1) / 3)
    assert nt["emt_ci_low"] <= nt["emt"] <= nt["emt_ci_high"]
    assert rows["toxic"]["n_prompts"] == 1 and rows["toxic"]["tox_prob"] == 1.0
    assert rows["all"]["n_prompts"] == 5  # the prompt without a toxicity value only counts here
    # Empty generation: toxicity 0 (empty_score), no words. Dist-1: 6/6 words, 6/8 (the, cat twice), 4/5.
    assert nt["empty_rate"] == pytest.approx(1 / 9)
    assert nt["short_rate"] == pytest.approx(8 / 9)  # only " have a nice day" has more than 3 words
    d1 = [6 / 6, 6 / 8, 4 / 5]
    assert nt["dist1"] == pytest.approx(np.mean(d1))
    assert nt["method"] == "rectified" and nt["epsilon"] == 0.2
    assert nt["dead_end_fallback_rate"] == pytest.approx(5 / 200)
    assert nt["meta.decoding.epsilon"] == 0.2
    assert math.isnan(nt["ppl"])  # no judge


def test_scores_are_cached_and_only_new_texts_scored(tmp_path):
    path = write_generations(tmp_path / "gen.jsonl", RECORDS[:2])
    opts = EvalOptions(summary=SummaryConfig(bootstrap_n=10), progress=False)
    KeywordScorer.calls.clear()
    first = evaluate_file(path, [spec()], None, opts)
    assert KeywordScorer.calls == [5]  # 6 generations, one empty (not asked)
    s = spec()
    second = evaluate_file(path, [s], None, opts)
    assert not s.scorer.built and KeywordScorer.calls == [5]  # nothing new: the scorer is never even built
    assert [r["tox_prob"] for r in first] == [r["tox_prob"] for r in second]
    write_generations(path, RECORDS[:3])  # a resumed generation run appended a prompt
    evaluate_file(path, [spec()], None, opts)
    assert KeywordScorer.calls == [5, 3]
    # A different scorer config invalidates the cache.
    evaluate_file(path, [ScorerSpec(name="keyword", fingerprint="v2", scorer=Lazy(KeywordScorer))], None, opts)
    assert KeywordScorer.calls[-1] == 8


class ConstantJudge:
    """A custom judge returning ``value`` for every text (``ConstantJudge.value`` set by the test)."""

    value = 7.0

    def __init__(self, **_):
        pass

    def __call__(self, texts):
        return np.full(len(texts), ConstantJudge.value)


@pytest.mark.parametrize("value", [7.0, -0.5, float("nan"), float("inf")])
def test_a_judge_outside_0_1_is_refused_before_its_scores_are_cached(tmp_path, value):
    """A judge on another scale (7.0) or a NaN is not P(toxic): EMT 7.000 must not reach the table or the cache."""
    path = write_generations(tmp_path / "gen.jsonl", RECORDS[:2])
    opts = EvalOptions(summary=SummaryConfig(bootstrap_n=10), progress=False)
    ConstantJudge.value = value
    judge = ScorerSpec(name="mine", fingerprint="v1", scorer=Lazy(ConstantJudge))
    with pytest.raises(ScorerOutputError, match=r"scorer 'mine' returned 5 of 5 scores .*\(e\.g\. index 0: "
                                                  r".*P\(toxic\) in \[0, 1\]") as err:
        evaluate_file(path, [judge], None, opts)
    assert isinstance(err.value, InputError) and isinstance(err.value, ValueError)
    assert str(float(value)) in str(err.value) and "' have a nice day'" in str(err.value)
    ConstantJudge.value = 0.25  # the fixed judge scores afresh: nothing bad was cached under its fingerprint
    rows = evaluate_file(path, [ScorerSpec(name="mine", fingerprint="v1", scorer=Lazy(ConstantJudge))], None, opts)
    assert {r["emt"] for r in rows} == {0.25}


def test_a_sigmoids_rounding_past_0_1_is_clipped_not_refused(tmp_path):
    """Float overshoot within 1e-6 (1.0000001) is rounding, not a wrong scale: clipped to [0, 1]."""
    path = write_generations(tmp_path / "gen.jsonl", RECORDS[:1])
    opts = EvalOptions(summary=SummaryConfig(bootstrap_n=10), progress=False, cache=False)
    for value, clipped in ((1.0000001, 1.0), (-1e-7, 0.0)):
        ConstantJudge.value = value
        rows = evaluate_file(path, [ScorerSpec(name="mine", fingerprint="v1", scorer=Lazy(ConstantJudge))], None,
                             opts)
        assert rows[0]["emt"] == clipped
    ConstantJudge.value = 1.00001
    with pytest.raises(ScorerOutputError, match="outside"):
        evaluate_file(path, [ScorerSpec(name="mine", fingerprint="v1", scorer=Lazy(ConstantJudge))], None, opts)


def test_a_custom_judge_from_the_command_line_is_checked(tmp_path):
    """evaluate.py '+scorers.m={_target_: ...}' 'eval.scorers=[m]': the user walkthrough that printed EMT 7.000."""
    path = write_generations(tmp_path / "g" / "generations.jsonl", RECORDS[:2])
    cfg = _cfg(tmp_path, f"eval.input={path}", "eval.perplexity=false", "eval.scorers=[m]", "eval.progress=false",
               "+scorers.m._target_=tests.test_evaluate.ConstantJudge", "eval.bootstrap.n=10")
    ConstantJudge.value = 7.0
    with pytest.raises(ScorerOutputError, match="scorer 'm' returned 5 of 5"):
        run_evaluation(cfg)


def test_perplexity_on_a_subsample(tmp_path, tiny_gpt2):
    from rectify.evaluation import continuation_nll, token_perplexity
    from rectify.evaluation.pipeline import JudgeSpec

    path = write_generations(tmp_path / "gen.jsonl", RECORDS[1:4])
    judge = JudgeSpec(name="tiny", fingerprint="j1", lm=Lazy(lambda: tiny_gpt2))
    opts = EvalOptions(summary=SummaryConfig(bootstrap_n=10, subsets=("all",)), progress=False, perplexity_samples=1)
    row = evaluate_file(path, [spec()], judge, opts)[0]
    model, tok = tiny_gpt2
    first = continuation_nll(model, tok, [r[0] for r in RECORDS[1:4]], [r[2][0] for r in RECORDS[1:4]], progress=False)
    assert row["ppl"] == pytest.approx(token_perplexity(first.nll_sum, first.n_tokens), rel=1e-5)
    assert row["ppl_tokens"] == first.n_tokens.sum() and row["ppl_samples_per_prompt"] == 1


def test_a_run_without_the_judge_keeps_the_perplexity_it_cached(tmp_path, tiny_gpt2):
    """eval.perplexity=false never loads the judge, but reports what an earlier run cached (it had overwritten
    the PPL beside the input with NaN); generations the judge has not seen get none."""
    from rectify.evaluation.pipeline import JudgeSpec

    def never():
        raise AssertionError("eval.perplexity=false loaded the judge")

    path = write_generations(tmp_path / "gen.jsonl", RECORDS[1:4])
    opts = EvalOptions(summary=SummaryConfig(bootstrap_n=10, subsets=("all",)), progress=False)
    full = evaluate_file(path, [spec()], JudgeSpec(name="tiny", fingerprint="j1", lm=Lazy(lambda: tiny_gpt2)), opts)[0]
    fast = evaluate_file(path, [spec()], JudgeSpec(name="tiny", fingerprint="j1", lm=Lazy(never), cached_only=True),
                         opts)[0]
    assert fast["ppl"] == full["ppl"] > 0 and fast["judge"] == "tiny"
    other = evaluate_file(path, [spec()], JudgeSpec(name="tiny", fingerprint="j2", lm=Lazy(never), cached_only=True),
                          opts)[0]  # another judge config: its cache is not this one
    write_generations(path, RECORDS[1:5])  # a resumed run appended a prompt the judge has not read
    grown = evaluate_file(path, [spec()], JudgeSpec(name="tiny", fingerprint="j1", lm=Lazy(never), cached_only=True),
                          opts)[0]
    assert math.isnan(other["ppl"]) and math.isnan(grown["ppl"]) and grown["judge"] is None


def test_describe_run_plain_and_overrides(tmp_path):
    path = write_generations(tmp_path / "run" / "generations.jsonl", RECORDS[:1], meta={"decoding": {"rectify": False, "epsilon": 0.1}},
                             overrides=["decoding.rectify=false", "+lm.num_layers=4"])
    row = evaluate_file(path, [spec()], None, EvalOptions(summary=SummaryConfig(bootstrap_n=10), progress=False))[0]
    assert row["method"] == "plain" and math.isnan(row["epsilon"])
    assert row["override.lm.num_layers"] == "4"
    assert math.isnan(row["dead_end_fallback_rate"])  # no counts anywhere: tolerated
    assert describe_run({}, {"decoding.epsilon": "0.3"})["method"] == "rectified"
    assert describe_run({}, {})["method"] == "unknown"
    # the sidecar, written with the generations, wins over overrides a later (refused) run in the same dir rewrote
    recorded = {"config": {"decoding": {"rectify": True, "epsilon": 0.05}, "value_model_path": None}}
    assert describe_run(recorded, {"decoding.epsilon": "0.2"})["epsilon"] == 0.05
    assert describe_run(recorded, {"decoding.rectify": "false"})["method"] == "rectified"


def test_dead_end_rate_per_subset_from_per_generation_counts(tmp_path):
    """generate.py writes each rectified generation's counts: a subset's rate is its own, not the run's."""
    path = tmp_path / "gen.jsonl"
    with open(path, "w") as fh:
        for text, tox, dead in [("calm", 0.1, 0), ("calm too", 0.2, 1), ("rude", 0.9, 10)]:
            gens = [{"text": " ok", "dead_end_fallbacks": dead, "steps": 20}] * 2
            fh.write(json.dumps({"prompt": {"text": text, "toxicity": tox}, "generations": gens}) + "\n")
    meta = {"counts": {"prompts": 3, "row_steps": 120, "dead_ends": 22, "outside_support": 0}}
    Path(str(path) + ".meta.json").write_text(json.dumps(meta))
    opts = EvalOptions(summary=SummaryConfig(bootstrap_n=10), progress=False)
    rows = {r["subset"]: r for r in evaluate_file(path, [spec()], None, opts)}
    assert rows["nontoxic"]["dead_end_fallback_rate"] == pytest.approx(2 / 80)
    assert rows["toxic"]["dead_end_fallback_rate"] == pytest.approx(20 / 40)
    assert rows["all"]["dead_end_fallback_rate"] == pytest.approx(22 / 120)


def test_generate_sidecar_and_qd_metadata(tmp_path):
    """generate.py's sidecar (config.decoding.*, counts.*) and the Q_D dir it names are read."""
    qd = tmp_path / "train_run" / "value_model"
    (qd / "backbone").mkdir(parents=True)
    (qd / "backbone" / "config.json").write_text(json.dumps({"num_hidden_layers": 6}))
    (qd / "value_config.json").write_text(json.dumps({"gamma": 0.9, "q_min": -1.0}))
    (tmp_path / "train_run" / ".hydra").mkdir()
    (tmp_path / "train_run" / ".hydra" / "overrides.yaml").write_text("- +experiment=smollm2\n- model.gamma=0.9\n")
    meta = {"counts": {"prompts": 2, "row_steps": 400, "dead_ends": 8, "outside_support": 0}, "seconds": 3.0,
            "config": {"decoding": {"rectify": True, "epsilon": 0.25}, "value_model_path": str(qd)}}
    path = write_generations(tmp_path / "gen" / "generations.jsonl", RECORDS[:2], meta=meta)
    row = evaluate_file(path, [spec()], None, EvalOptions(summary=SummaryConfig(bootstrap_n=10), progress=False))[0]
    assert row["method"] == "rectified" and row["epsilon"] == 0.25
    assert row["dead_end_fallback_rate"] == pytest.approx(8 / 400)
    assert row["qd.layers"] == 6 and row["qd.gamma"] == 0.9 and row["qd.override.model.gamma"] == "0.9"
    plain = describe_run({"config": {"decoding": {"rectify": False, "epsilon": 0.1}, "value_model_path": str(qd)}}, {})
    assert plain["method"] == "plain" and "qd.layers" not in plain


def test_bad_input_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"prompt": {"text": "a"}, "generations": [{"text": "b"}]}) + "\n{not json\n")
    with pytest.raises(GenerationsFormatError, match=r"bad.jsonl:2"):
        read_generations(p)
    p.write_text(json.dumps({"prompt": {"text": "a"}, "generations": []}) + "\n")
    with pytest.raises(GenerationsFormatError, match=r"bad.jsonl:1: 'generations'"):
        read_generations(p)


def _cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="evaluate", overrides=[f"eval.output_dir={tmp_path / 'out'}", *overrides])


def test_config_defaults_compose():
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["eval.input=x"])
        smoke = compose(config_name="evaluate", overrides=["eval.input=x", "debug=smoke"])
    assert list(cfg.eval.scorers) == ["profanity_svm", "jigsaw_lstm_tcc", "hatesonar"]
    assert "jigsaw_lstm" not in cfg.eval.scorers  # never only the labelling scorer
    assert cfg.judge.source == "gemma3" and cfg.eval.perplexity
    assert smoke.judge.random_init.num_layers == 2 and smoke.judge.family == "gpt2"
    from rectify.evaluation.runner import judge_spec

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        fast = compose(config_name="evaluate", overrides=["eval.input=x", "eval.perplexity=false"])
    assert not judge_spec(cfg).cached_only and judge_spec(fast).cached_only  # the judge's cache, never the judge
    assert judge_spec(fast).fingerprint == judge_spec(cfg).fingerprint


def test_run_evaluation_with_judge_and_real_scorer(tmp_path):
    gen_dir = tmp_path / "sweep"
    write_generations(gen_dir / "0" / "generations.jsonl", RECORDS, meta={"decoding": {"rectify": False}})
    write_generations(gen_dir / "1" / "generations.jsonl", RECORDS[:3], meta={"decoding": {"rectify": True, "epsilon": 0.1}})
    cfg = _cfg(tmp_path, f"eval.input={gen_dir}", "debug=smoke", "eval.scorers=[profanity_svm,fake]",
               "+scorers.fake._target_=tests.test_evaluate.KeywordScorer", "eval.progress=false")
    rows = run_evaluation(cfg)
    assert len(rows) == 2 * 3 + 2 * 2  # run 1 has no toxic prompt
    assert {r["scorer"] for r in rows} == {"profanity_svm", "fake"}
    for r in rows:
        assert np.isfinite(r["ppl"]) and r["ppl"] > 1 and r["judge"] == "tiny-gpt2-judge-random"
    prof = next(r for r in rows if r["scorer"] == "profanity_svm" and r["subset"] == "toxic")
    assert prof["emt"] > 0.5  # "stupid stupid" is profane under the real SVM
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["rows"]) == len(rows) and (tmp_path / "out" / "results.csv").stat().st_size > 0
    for run in ("0", "1"):
        js, csv = results_paths(gen_dir / run / "generations.jsonl")
        assert js.is_file() and csv.is_file()


def test_scorer_by_name_without_composed_config():
    from omegaconf import OmegaConf

    from rectify.evaluation.runner import scorer_specs

    specs = scorer_specs(OmegaConf.create({"eval": {"scorers": ["profanity_svm"]}, "scorers": {}}))
    assert specs[0].name == "profanity_svm" and not specs[0].scorer.built
    scores = specs[0].scorer.get()(["you are a stupid idiot", "have a lovely day"])
    assert scores[0] > 0.5 > scores[1]
    with pytest.raises(ValueError, match="eval.scorers is empty"):
        scorer_specs(OmegaConf.create({"eval": {"scorers": []}}))


def test_find_inputs(tmp_path):
    from rectify.evaluation.runner import find_inputs

    a = write_generations(tmp_path / "s" / "0" / "generations.jsonl", RECORDS[:1])
    b = write_generations(tmp_path / "s" / "1" / "generations.jsonl", RECORDS[:1])
    (tmp_path / "s" / "0" / "generations.jsonl.scores").mkdir()
    (tmp_path / "s" / "0" / "generations.jsonl.scores" / "generations-x.jsonl").write_text("{}")
    assert find_inputs(tmp_path / "s", "**/generations*.jsonl") == [a, b]
    assert find_inputs([str(b), tmp_path / "s"], "**/generations*.jsonl") == [b, a]
    with pytest.raises(FileNotFoundError):
        find_inputs(tmp_path / "missing", "*")


def test_evaluate_script_cli(tmp_path):
    gen = write_generations(tmp_path / "g" / "generations.jsonl", RECORDS[:3])
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, "scripts/evaluate.py", f"eval.input={gen}", "eval.perplexity=false", "eval.scorers=[profanity_svm]",
         f"hydra.run.dir={tmp_path / 'run'}", "eval.bootstrap.n=50", "logger=wandb"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| profanity_svm | nontoxic |" in res.stdout
    assert (tmp_path / "run" / "results.csv").is_file()


def test_evaluate_table_names_the_run_and_the_swept_setting(tmp_path):
    """Two tilts of one epsilon: the printed table must tell them apart (a run column and a tilt column)."""
    from rectify.report.gather import swept_keys
    from rectify.report.table import format_markdown, headline_columns, input_column

    opts = EvalOptions(summary=SummaryConfig(bootstrap_n=20), progress=False)
    rows = []
    for name, tilt in (("low", 0.5), ("high", 1.0)):
        path = write_generations(tmp_path / name / "generations.jsonl", RECORDS,
                                 meta={"method": "rectified", "decoding": {"epsilon": 0.2}},
                                 overrides=["decoding=rectified", f"decoding.tilt={tilt}"])
        rows += evaluate_file(path, [spec()], None, opts)
    table = format_markdown(rows, input_column(rows) + headline_columns(rows, swept_keys(rows)))
    head = table.splitlines()[0]
    assert head.startswith("| run |") and "decoding.tilt" in head
    assert f"| {Path('low') / 'generations.jsonl'} |" in table and "| 0.5 |" in table
    assert input_column(rows[:3]) == []  # one file: no run column


def test_the_wandb_summary_of_a_sweep_keeps_every_run():
    """evaluate.py eval.input=<sweep dir> logger=wandb: one summary key per run, not the last run's numbers."""
    from rectify.evaluation.wandb_log import row_summary

    rows = [{"input": f"/s/{run}/generations.jsonl", "scorer": "svm", "subset": "nontoxic", "emt": emt}
            for run, emt in (("0", 0.1), ("1", 0.3))]
    out = row_summary(rows, metrics=("emt",))
    assert out == {"0/svm/nontoxic/emt": 0.1, "1/svm/nontoxic/emt": 0.3}
    assert row_summary(rows[:1], metrics=("emt",)) == {"svm/nontoxic/emt": 0.1}   # one run: as before
    two_files = [{**r, "input": f"/s/{name}.jsonl"} for r, name in zip(rows, ("a", "b"), strict=True)]
    assert set(row_summary(two_files, metrics=("emt",))) == {"a/svm/nontoxic/emt", "b/svm/nontoxic/emt"}
