"""The select stage on synthetic evaluation summaries: it picks the best eligible rule, respects the budgets,
breaks ties by perplexity, refuses when nothing is eligible, and its script writes the record and the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rectify.selection import Criterion, dev_table, rule_overrides, run_name, select, write_selection
from tests.eval_fixtures import JUDGES, dev_sweep, write_run

ROOT = Path(__file__).resolve().parents[1]


def by_name(record):
    return {c["name"]: c for c in record["candidates"]}


def test_picks_the_largest_cut_within_the_budgets(tmp_path):
    dev_sweep(tmp_path)
    rec = select(tmp_path, Criterion())
    assert (rec["selected"], rec["runner_up"], rec["least_bad"]) == ("q4_eps_0.05", "eps_0.1", None)
    c = by_name(rec)
    assert c["q4_eps_0.05"]["score"] == pytest.approx(0.5) and c["q4_eps_0.05"]["ppl_change"] == pytest.approx(0.1)
    assert set(c["q4_eps_0.05"]["cuts"]) == set(JUDGES)  # hatesonar shown, not averaged
    assert c["q8_eps_0.05"]["reasons"] == ["perplexity +40.0% > +20%"]
    assert c["eps_0.3"]["reasons"] == ["Dist-3 -0.100 < -0.05"]
    assert c["q4_eps_0.05"]["overrides"] == ["decoding=rectified", "value_model_path=outputs/demo/train/value_model",
                                             "decoding.epsilon=0.05", "decoding.q_scale=4"]
    assert c["q4_eps_0.05"]["decoding"]["epsilon"] == 0.05
    assert rec["dev"]["n_prompts"] == 20 and rec["baseline"]["tox_prob"]["profanity_svm"] == 0.4


def test_the_budgets_and_judges_come_from_the_criterion(tmp_path):
    dev_sweep(tmp_path)
    assert select(tmp_path, Criterion(max_ppl_increase=0.5))["selected"] == "q8_eps_0.05"
    assert select(tmp_path, Criterion(max_dist3_drop=0.2, max_ppl_increase=0.05))["selected"] == "eps_0.1"
    # under hatesonar alone q4 cuts 75%, eps_0.1 nothing (not eligible: a rule must cut)
    rec = select(tmp_path, Criterion(judges=("hatesonar",)))
    assert rec["selected"] == "q4_eps_0.05" and rec["runner_up"] is None
    assert "min cut +0.0% <= 0%" in by_name(rec)["eps_0.1"]["reasons"]
    with pytest.raises(ValueError, match="metric"):
        Criterion.from_any({"metric": "ppl"})


def test_ties_go_to_the_lower_perplexity(tmp_path):
    write_run(tmp_path, "plain", {"profanity_svm": (0.4, 0.3), "jigsaw_lstm_tcc": (0.4, 0.3)}, ppl=50.0,
              overrides=["decoding=plain"])
    for name, ppl in (("a", 56.0), ("b", 54.0)):
        write_run(tmp_path, name, {"profanity_svm": (0.2, 0.2), "jigsaw_lstm_tcc": (0.2, 0.2)}, ppl=ppl,
                  overrides=["decoding=rectified"])
    rec = select(tmp_path, Criterion())
    assert (rec["selected"], rec["runner_up"]) == ("b", "a")


def test_refuses_when_no_candidate_is_eligible(tmp_path):
    dev_sweep(tmp_path)
    out = tmp_path / "out"
    rec = write_selection(tmp_path, Criterion(max_ppl_increase=0.01), out)
    assert rec["selected"] is None and rec["runner_up"] is None
    assert rec["least_bad"] == "eps_0.1"  # +4%: the nearest to the 1% budget
    saved = json.loads((out / "selected.json").read_text())
    assert saved["selected"] is None and all(not c["eligible"] for c in saved["candidates"])
    table = (out / "dev_table.md").read_text()
    assert "No candidate is eligible: nothing selected. Least bad: `eps_0.1`." in table


def test_missing_baseline_or_judge_is_an_error_not_a_choice(tmp_path):
    dev_sweep(tmp_path)
    with pytest.raises(ValueError, match="baseline"):
        select(tmp_path, Criterion(baseline="nothing"))
    rec = select(tmp_path, Criterion(judges=("profanity_svm", "perspective")))
    assert rec["selected"] is None and all(
        "not evaluated under perspective (scripts/evaluate.py eval.scorers=[...])" in c["reasons"]
        for c in rec["candidates"])


def test_a_judge_never_evaluated_is_named_and_perplexity_still_read(tmp_path):
    dev_sweep(tmp_path)
    rec = select(tmp_path, Criterion(judges=("never_run",)))
    reasons = by_name(rec)["eps_0.1"]["reasons"]
    assert reasons[0].startswith("not evaluated under never_run") and not any("perplexity" in r for r in reasons)


def test_a_multirun_folder_named_0_can_be_the_baseline(tmp_path):
    """generate.py -m names its runs 0, 1, ...; Hydra hands select.baseline=0 over as an integer."""
    write_run(tmp_path, "0", {"profanity_svm": (0.4, 0.4), "jigsaw_lstm_tcc": (0.4, 0.4)}, ppl=50.0,
              overrides=["decoding=plain"])
    write_run(tmp_path, "1", {"profanity_svm": (0.2, 0.2), "jigsaw_lstm_tcc": (0.2, 0.2)}, ppl=52.0,
              overrides=["decoding.tilt=8"])
    assert select(tmp_path, Criterion.from_any({"baseline": 0}))["selected"] == "1"


def test_a_clean_baseline_gives_no_relative_cut(tmp_path):
    write_run(tmp_path, "plain", {"profanity_svm": (0.0, 0.1), "jigsaw_lstm_tcc": (0.2, 0.2)}, ppl=50.0,
              overrides=["decoding=plain"])
    write_run(tmp_path, "a", {"profanity_svm": (0.0, 0.1), "jigsaw_lstm_tcc": (0.1, 0.1)}, ppl=50.0,
              overrides=["decoding=rectified"])
    rec = select(tmp_path, Criterion())
    assert rec["selected"] is None and rec["least_bad"] == "a"
    assert by_name(rec)["a"]["reasons"] == ["`plain` has tox_prob 0 under profanity_svm: no relative cut to compare"]


def test_run_names_and_rule_overrides(tmp_path):
    gen = write_run(tmp_path, "x", {"s": (0.1, 0.1)}, ppl=1.0, overrides=["decoding=plain", "decoding.top_p=0.9"])
    assert run_name(gen, tmp_path) == "x" and run_name(tmp_path / "g.jsonl", tmp_path) == "g"
    assert rule_overrides(gen) == ["decoding=plain", "decoding.top_p=0.9"]


def test_rule_overrides_come_from_the_sidecar_first(tmp_path):
    """A later run in the same run dir (even one refused for another config) rewrites .hydra/overrides.yaml; the
    overrides kept in the generations' sidecar are what drew them."""
    gen = write_run(tmp_path, "x", {"s": (0.1, 0.1)}, ppl=1.0, overrides=["decoding.epsilon=0.2"])
    sidecar = gen.with_name(gen.name + ".meta.json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(meta | {"overrides": ["decoding.epsilon=0.05", "batch_size=8"]}))
    assert rule_overrides(gen) == ["decoding.epsilon=0.05"]


def test_script_writes_selected_and_dev_table(tmp_path):
    dev_sweep(tmp_path / "dev")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "scripts/select_rule.py", f"select.inputs={tmp_path / 'dev'}",
                           f"select.output_dir={out}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "selected.json").read_text())["selected"] == "q4_eps_0.05"
    table = (out / "dev_table.md").read_text()
    assert table in done.stdout and "| `q8_eps_0.05` | no |" in table and "perplexity +40.0% > +20%" in table
    strict = subprocess.run([sys.executable, "scripts/select_rule.py", f"select.inputs={tmp_path / 'dev'}",
                             f"select.output_dir={out}", "select.max_ppl_increase=0.01", "select.require=true",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True)
    assert strict.returncode == 1 and "no candidate met the criterion" in strict.stderr


def test_min_aggregate_prefers_the_cut_every_judge_agrees_on(tmp_path):
    write_run(tmp_path, "plain", {j: (0.40, 0.30) for j in JUDGES}, ppl=50.0, overrides=["decoding=plain"])
    write_run(tmp_path, "lopsided", {"profanity_svm": (0.04, 0.2), "jigsaw_lstm_tcc": (0.04, 0.2),
                                     "hatesonar": (0.36, 0.3)}, ppl=52.0, overrides=["decoding.tilt=8"])
    write_run(tmp_path, "even", {j: (0.20, 0.2) for j in JUDGES}, ppl=54.0, overrides=["decoding.tilt=4"])
    judges = tuple(JUDGES)
    assert select(tmp_path, Criterion(judges=judges, aggregate="mean"))["selected"] == "lopsided"  # 63% vs 50%
    rec = select(tmp_path, Criterion(judges=judges))   # the default (the recipe's): the worst judge's cut
    assert rec["selected"] == "even" and by_name(rec)["lopsided"]["score"] == pytest.approx(0.1)
    assert "cut vs `plain` on nontoxic prompts under the worst of profanity_svm" in rec["criterion"]["text"]
    with pytest.raises(ValueError, match="aggregate"):
        Criterion.from_any({"aggregate": "max"})


def test_the_length_guard_excludes_a_rule_that_ends_continuations_early(tmp_path):
    write_run(tmp_path, "plain", {j: (0.40, 0.30) for j in JUDGES}, ppl=50.0, overrides=["decoding=plain"],
              short_rate=0.02)
    write_run(tmp_path, "clean_128", {j: (0.08, 0.2) for j in JUDGES}, ppl=56.0, overrides=["decoding.tilt=128"],
              short_rate=0.13)   # cuts 80%, but 11 points more continuations of <= 3 words
    write_run(tmp_path, "clean_64", {j: (0.12, 0.2) for j in JUDGES}, ppl=48.0, overrides=["decoding.tilt=64"],
              short_rate=0.05)
    assert select(tmp_path, Criterion())["selected"] == "clean_128"   # off by default
    rec = select(tmp_path, Criterion(max_short_increase=0.05))
    assert rec["selected"] == "clean_64"
    c = by_name(rec)
    assert c["clean_128"]["short_change"] == pytest.approx(0.11)
    assert c["clean_128"]["reasons"] == ["<= 3 words +11.0 pts > +5 pts"]
    assert "at most 3 words up at most 5 points" in rec["criterion"]["text"]
    assert "| +11.0 pts |" in dev_table(rec)
    rec = select(tmp_path, Criterion(max_short_increase=0.01))   # none eligible: the nearest to the budget
    assert rec["selected"] is None and rec["least_bad"] == "clean_64"


def test_the_length_guard_refuses_runs_evaluated_without_short_rate(tmp_path):
    dev_sweep(tmp_path)   # evaluation rows without short_rate
    rec = select(tmp_path, Criterion(max_short_increase=0.05))
    assert rec["selected"] is None
    assert any("no short_rate" in r for r in by_name(rec)["q4_eps_0.05"]["reasons"])
    assert select(tmp_path, Criterion())["selected"] == "q4_eps_0.05"


def test_a_baseline_on_other_prompts_or_another_k_is_not_compared(tmp_path):
    """A relative cut between two prompt sets measures the prompts: such a candidate is not eligible, and not
    named as the least bad either."""
    two = {"profanity_svm": (0.4, 0.4), "jigsaw_lstm_tcc": (0.4, 0.4)}
    write_run(tmp_path, "plain", two, ppl=50.0, overrides=["decoding=plain"], n_prompts=2, k=3)
    write_run(tmp_path, "a", {j: (0.2, 0.2) for j in two}, ppl=51.0, overrides=["decoding.tilt=8"], n_prompts=4, k=2)
    write_run(tmp_path, "b", {j: (0.3, 0.3) for j in two}, ppl=51.0, overrides=["decoding.tilt=4"], n_prompts=2, k=3)
    rec = select(tmp_path, Criterion())
    assert rec["selected"] == "b"
    reasons = by_name(rec)["a"]["reasons"]
    assert reasons == ["not comparable with `plain`: drawn on 4 prompts, k = 2, the baseline on 2 prompts, k = 3"]
    for run in ("plain", "b"):   # same counts, another prompt file (its sha256, recorded by generate.py)
        eval_file = tmp_path / run / "generations.eval.json"
        data = json.loads(eval_file.read_text())
        for r in data["rows"]:
            r["meta.input_digests.prompts_path"] = run
        eval_file.write_text(json.dumps(data))
    rec = select(tmp_path, Criterion())
    assert rec["selected"] is None and rec["least_bad"] is None
    assert by_name(rec)["b"]["reasons"][0].endswith("; another prompt file")


def test_a_sweep_with_its_plain_run_in_another_folder(tmp_path):
    """docs/cluster.md's layout: the rules in gen/, plain in plain/. Both as a list of inputs (runs named gen/0,
    plain/0), or the baseline given by its folder."""
    two = {"profanity_svm": (0.4, 0.4), "jigsaw_lstm_tcc": (0.4, 0.4)}
    write_run(tmp_path / "plain", "0", two, ppl=50.0, overrides=["decoding=plain"])
    write_run(tmp_path / "gen", "0", {j: (0.2, 0.2) for j in two}, ppl=51.0, overrides=["decoding.epsilon=0.1"])
    write_run(tmp_path / "gen", "1", {j: (0.3, 0.3) for j in two}, ppl=51.0, overrides=["decoding.epsilon=0.2"])
    rec = select([tmp_path / "gen", tmp_path / "plain"], Criterion(baseline="plain/0"))
    assert rec["selected"] == "gen/0" and sorted(by_name(rec)) == ["gen/0", "gen/1"]
    rec = select(tmp_path / "gen", Criterion(baseline=str(tmp_path / "plain" / "0")))
    assert rec["selected"] == "0" and sorted(by_name(rec)) == ["0", "1"]
    rec = select([tmp_path / "gen", tmp_path / "plain"], Criterion(baseline=str(tmp_path / "plain" / "0")))
    assert sorted(by_name(rec)) == ["gen/0", "gen/1"]   # the baseline's folder inside the inputs: not a candidate
    with pytest.raises(ValueError, match="no evaluated baseline run"):
        select(tmp_path / "gen", Criterion(baseline=str(tmp_path / "nowhere")))


def test_perplexities_of_two_judges_are_not_compared(tmp_path):
    two = {"profanity_svm": (0.4, 0.4), "jigsaw_lstm_tcc": (0.4, 0.4)}
    write_run(tmp_path, "plain", two, ppl=50.0, overrides=["decoding=plain"])
    write_run(tmp_path, "a", {j: (0.2, 0.2) for j in two}, ppl=5000.0, overrides=["decoding.tilt=8"])
    data = json.loads((tmp_path / "a" / "generations.eval.json").read_text())
    for r in data["rows"]:
        r["judge"] = "mylm"
    (tmp_path / "a" / "generations.eval.json").write_text(json.dumps(data))
    rec = select(tmp_path, Criterion())
    assert rec["selected"] is None and rec["least_bad"] is None
    assert by_name(rec)["a"]["reasons"][0].startswith("not comparable with `plain`: perplexity judged by mylm")


def test_runs_without_prompt_toxicity_name_the_subset_to_select_on(tmp_path):
    """Prompts with no toxicity value (a .txt file) have only `all` rows: the error says select.subset=all."""
    two = {"profanity_svm": (0.4, 0.4), "jigsaw_lstm_tcc": (0.4, 0.4)}
    write_run(tmp_path, "plain", two, ppl=50.0, overrides=["decoding=plain"], subsets=("all",))
    write_run(tmp_path, "a", {j: (0.2, 0.2) for j in two}, ppl=51.0, overrides=["decoding.tilt=8"], subsets=("all",))
    with pytest.raises(ValueError, match="select.subset=all"):
        select(tmp_path, Criterion())
    assert select(tmp_path, Criterion(subset="all"))["selected"] == "a"
