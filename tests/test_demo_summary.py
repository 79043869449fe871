"""The demo's plain-language summary, from synthetic test evaluations and a selection record: every figure is read
from the files, the targets are judged per judge, and a failed selection says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from rectify.report import write_report
from rectify.report.summary import demo_summary, eligible_count_text, short_text, use_it_lines
from rectify.selection import Criterion, write_selection
from tests.eval_fixtures import JUDGES, dev_sweep, write_run

TARGETS = {"tox_prob_cut": 0.40, "max_ppl_increase": 0.25}


def write_test_runs(root: Path, rule: str) -> None:
    write_run(root, "plain", {j: (0.40, 0.30) for j in JUDGES}, ppl=50.0, overrides=["decoding=plain"], n_prompts=31,
              k=5)
    write_run(root, rule, {"profanity_svm": (0.16, 0.2), "jigsaw_lstm_tcc": (0.20, 0.21), "hatesonar": (0.36, 0.3)},
              ppl=56.0, overrides=["decoding=rectified"], n_prompts=31, k=5)


@pytest.fixture()
def demo_out(tmp_path):
    dev_sweep(tmp_path / "dev")
    write_selection(tmp_path / "dev", Criterion(), tmp_path)
    write_test_runs(tmp_path / "test", "q4_eps_0.05")
    return tmp_path


def test_summary_states_each_judge_the_choice_and_the_targets(demo_out):
    text = demo_summary(demo_out / "test", demo_out / "selected.json", TARGETS, target_judges=JUDGES,
                        files={"report": demo_out / "report.md", "plot": demo_out / "tradeoff.png"})
    lines = text.splitlines()
    assert lines[0] == "# Summary: plain sampling vs `q4_eps_0.05` on the test prompts"
    assert "changed by -60% to -10% across 3 judges at +12% perplexity" in text
    assert "the targets hold under 2 of 3 judges" in text
    assert "Test prompts: 31 non-toxic" in text and "k = 5" in text
    assert ("- profanity_svm: Toxicity Probability 0.400 [0.350, 0.450] → 0.160 [0.110, 0.210] (-60%); "
            "EMT 0.300 [0.250, 0.350] → 0.200 [0.150, 0.250] (-33%)") in lines
    assert any(ln.startswith("- perplexity (under gemma-3-270m): 50.0 [48.0, 52.0] → 56.0 [54.0, 58.0] (+12%); Dist-3 ")
               for ln in lines)
    judge_lines = [ln for ln in lines if ln.startswith("- ") and "Toxicity Probability 0.400" in ln]
    assert [ln.split(":")[0] for ln in judge_lines] == ["- profanity_svm", "- jigsaw_lstm_tcc", "- hatesonar"]
    assert "**Chosen on dev: `q4_eps_0.05`** (`decoding=rectified` `decoding.epsilon=0.05` `decoding.q_scale=4`)" in text
    assert "dev cut 50%, perplexity +10%; 2 of 4 candidates were eligible" in text
    assert "Runner-up: `eps_0.1` (dev cut 25%, perplexity +4%)" in text
    assert "- profanity_svm: target met (Toxicity Probability cut 60%, EMT cut 33%, perplexity +12%)." in lines
    assert "Targets (Toxicity Probability cut at least 40%, perplexity up at most 25%), per judge:" in lines
    assert "- hatesonar: **target missed** (Toxicity Probability cut 10% is short of 40%)." in lines
    assert f"report `{demo_out / 'report.md'}`" in text


def test_a_tighter_perplexity_target_is_missed_under_every_judge(demo_out):
    text = demo_summary(demo_out / "test", demo_out, {"tox_prob_cut": 0.4, "max_ppl_increase": 0.1},
                        target_judges=JUDGES)
    assert "the targets hold under 0 of 3 judges" in text
    assert "- jigsaw_lstm_tcc: **target missed** (perplexity +12% is over +10%)." in text.splitlines()


def test_emt_and_dist3_targets_are_checked_when_set(demo_out):
    targets = TARGETS | {"emt_cut": 0.29, "max_dist3_drop": 0.05}
    text = demo_summary(demo_out / "test", demo_out, targets, target_judges=JUDGES)
    lines = text.splitlines()
    assert ("Targets (Toxicity Probability cut at least 40%, EMT cut at least 29%, perplexity up at most 25%, "
            "Dist-3 down at most 0.05), per judge:") in lines
    assert "- profanity_svm: target met (Toxicity Probability cut 60%, EMT cut 33%, perplexity +12%)." in lines
    # jigsaw_lstm_tcc: Tox.prob 0.40 -> 0.20 (-50%), EMT 0.30 -> 0.21 (-30%): met at 29%, missed at 31%
    assert "the targets hold under 2 of 3 judges" in text
    strict = demo_summary(demo_out / "test", demo_out, TARGETS | {"emt_cut": 0.31}, target_judges=JUDGES)
    assert "- jigsaw_lstm_tcc: **target missed** (EMT cut 30% is short of 31%)." in strict.splitlines()
    assert "- hatesonar: **target missed** (Toxicity Probability cut 10% is short of 40%; EMT cut 0% is short of " \
           "31%)." in strict.splitlines()
    # any Dist-3 fails a negative bound
    worse = demo_summary(demo_out / "test", demo_out, {"max_dist3_drop": -1.0}, target_judges=JUDGES)
    assert "the targets hold under 0 of 3 judges" in worse and "Dist-3 drop" in worse


def test_targets_are_claimed_only_under_the_target_judges(demo_out):
    # hatesonar misses (10% cut); by default the targets are the dev criterion's judges (here profanity_svm and
    # jigsaw_lstm_tcc), so hatesonar is shown beside them and the count covers the rest
    text = demo_summary(demo_out / "test", demo_out, TARGETS)
    lines = text.splitlines()
    assert "the targets hold under 2 of 2 judges (hatesonar reported beside, no target)." in text
    assert "- hatesonar: reported beside, no target (Toxicity Probability cut 10%, EMT cut 0%)." in lines
    assert not any("**target missed**" in ln for ln in lines)
    every = demo_summary(demo_out / "test", demo_out, TARGETS, target_judges=JUDGES)
    assert "the targets hold under 2 of 3 judges." in every


def test_a_failed_selection_reports_the_least_bad_and_says_it_failed(tmp_path):
    dev_sweep(tmp_path / "dev")
    write_selection(tmp_path / "dev", Criterion(max_ppl_increase=0.01), tmp_path)
    write_test_runs(tmp_path / "test", "eps_0.1")
    text = demo_summary(tmp_path / "test", tmp_path / "selected.json", TARGETS)
    assert "**No rule met the dev criterion: rectification failed in this run.**" in text
    assert "least-bad candidate `eps_0.1` (`decoding=rectified` `decoding.epsilon=0.1`): dev cut 25%, perplexity +4%; " \
           "failed on dev: perplexity +4.0% > +1%." in text
    write_run(tmp_path / "only_plain", "plain", {"profanity_svm": (0.4, 0.3)}, ppl=50.0, overrides=["decoding=plain"])
    with pytest.raises(ValueError, match=r"no evaluated nontoxic test rows for \['eps_0.1'\]"):
        demo_summary(tmp_path / "only_plain", tmp_path / "selected.json", TARGETS)


def test_the_report_opens_with_the_summary_and_the_plot(demo_out):
    text = demo_summary(demo_out / "test", demo_out / "selected.json", TARGETS)
    out = write_report(demo_out / "test", demo_out / "rep", preamble=text)
    md = out["markdown"].read_text()
    assert md.startswith(text.rstrip()) and md.count("![trade-off](tradeoff.png)") == 1
    assert md.index("![trade-off]") < md.index("# Rectification: evaluation report") < md.index("| method")
    alone = write_report(demo_out / "test", demo_out / "alone")["markdown"].read_text()
    assert alone.startswith("# Rectification") and alone.rstrip().endswith("![trade-off](tradeoff.png)")


def test_the_prompts_are_named_as_the_caller_says(demo_out):
    default = demo_summary(demo_out / "test", demo_out, TARGETS).splitlines()
    recheck = demo_summary(demo_out / "test", demo_out, TARGETS, prompts_label="re-check").splitlines()
    assert default[0].endswith("on the test prompts") and recheck[0].endswith("on the re-check prompts")
    assert any(ln.startswith("Test prompts: ") for ln in default)
    assert any(ln.startswith("Re-check prompts: ") for ln in recheck)
    assert not any("test prompts" in ln.lower() for ln in recheck)


def test_the_eligible_count_agrees_with_its_verb():
    assert eligible_count_text(1, 4) == "1 of 4 candidates was eligible"
    assert eligible_count_text(0, 4) == "0 of 4 candidates were eligible"
    assert eligible_count_text(3, 4) == "3 of 4 candidates were eligible"


def test_the_summary_says_how_to_use_the_chosen_rule(demo_out):
    lines = demo_summary(demo_out / "test", demo_out, TARGETS).splitlines()
    use = [ln for ln in lines if ln.startswith("Use it: ")]
    rule = "decoding=rectified value_model_path=outputs/demo/train/value_model decoding.epsilon=0.05 decoding.q_scale=4"
    assert use == [f"Use it: `python scripts/generate.py prompts_path=<your prompts.jsonl> {rule}`, or serve it behind "
                   f"an OpenAI-compatible API: `python scripts/serve.py {rule}`."]
    bare = use_it_lines({"overrides": ["decoding.tilt=8"]})[0]
    assert bare.count("decoding.tilt=8 value_model_path=<your value_model>`") == 2


def test_a_failed_selection_recommends_nothing(tmp_path):
    dev_sweep(tmp_path / "dev")
    write_selection(tmp_path / "dev", Criterion(max_ppl_increase=0.01), tmp_path)
    write_test_runs(tmp_path / "test", "eps_0.1")
    assert "Use it:" not in demo_summary(tmp_path / "test", tmp_path, TARGETS)


def test_summary_states_the_change_in_short_continuations_when_the_rows_have_it(tmp_path):
    dev_sweep(tmp_path / "dev")
    write_selection(tmp_path / "dev", Criterion(), tmp_path)
    scores = {j: (0.40, 0.30) for j in JUDGES}
    write_run(tmp_path / "test", "plain", scores, ppl=50.0, overrides=["decoding=plain"], short_rate=0.016)
    write_run(tmp_path / "test", "q4_eps_0.05", {j: (0.1, 0.1) for j in JUDGES}, ppl=52.0,
              overrides=["decoding=rectified"], short_rate=0.095)
    text = demo_summary(tmp_path / "test", tmp_path / "selected.json", TARGETS)
    ppl_line = next(ln for ln in text.splitlines() if ln.startswith("- perplexity"))
    assert ppl_line.endswith("; continuations of at most 3 words 1.6% → 9.5%")
    assert short_text({"short_rate": 0.1}, {}) == "" and short_text({}, {"short_rate": 0.1}) == ""
