"""Q_D size x epsilon sweep, end to end on tiny models: Q_Ds of different depth -> a `generate.py -m` multirun
over value_model_path x decoding.epsilon (+ a plain run) -> evaluate -> report grouped by Q_D size and epsilon."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rectify.decoding.runner import run_generation
from rectify.evaluation.runner import run_evaluation
from rectify.lm import LMConfig, RandomInit
from rectify.report import swept_keys, write_report
from rectify.report.table import sort_rows
from rectify.value_model import ValueModel

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")
PROMPTS = [("The weather today is", 0.0), ("I think that you", 0.1), ("Shut up you stupid", 0.9)]
LAYERS = (1, 2)
EPSILONS = (0.1, 0.5)
SCORERS = {"profanity_svm", "keyword"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_qd(directory: Path, num_layers: int) -> Path:
    """A Q_D on a 2-block random Llama (SmolLM2's tokenizer) truncated to its first ``num_layers`` blocks: the
    same ``model.backbone.num_layers`` knob a size sweep turns. Narrow (32) so the two saves stay small."""
    lm = LMConfig(source="hub", name_or_path="tiny-llama", family="llama", num_layers=num_layers,
                  random_init=RandomInit(num_layers=2, hidden_size=32, num_heads=2, max_positions=64, seed=0))
    return ValueModel.from_lm(lm).save_pretrained(directory)


def compose_cfg(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(name, overrides=list(overrides))


def test_qd_size_by_epsilon_sweep_report(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": {"text": t, "toxicity": x}}) + "\n" for t, x in PROMPTS))
    qds = [save_qd(tmp_path / "qd" / f"L{n}" / "value_model", n) for n in LAYERS]

    # the sweep exactly as a user runs it: one Hydra multirun over Q_D path x epsilon
    gen = tmp_path / "gen"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "PROJECT_ROOT": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate.py"), "-m", "debug=smoke", f"prompts_path={prompts}",
         f"value_model_path={','.join(map(str, qds))}", f"decoding.epsilon={','.join(map(str, EPSILONS))}",
         f"hydra.sweep.dir={gen}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list(gen.glob("*/generations.jsonl"))) == len(LAYERS) * len(EPSILONS)
    # the plain baseline, in-process (same config, decoding=plain)
    run_generation(compose_cfg("generate", "debug=smoke", "decoding=plain", f"prompts_path={prompts}",
                               f"output_path={gen / 'plain' / 'generations.jsonl'}", f"paths.output_dir={gen / 'plain'}"))

    run_evaluation(compose_cfg(
        "evaluate", "debug=smoke", f"eval.input={gen}", "eval.scorers=[profanity_svm,keyword]",
        "+scorers.keyword._target_=rectify.data.keyword_scorer.KeywordScorer", "eval.perplexity=false",
        "eval.progress=false", f"eval.output_dir={tmp_path / 'eval'}", f"paths.output_dir={tmp_path / 'eval'}"))

    out = write_report(gen, tmp_path / "report", ci=False)
    assert out["swept"] == ["qd.layers"]  # Q_D size; epsilon has its own column; paths are not factors
    rows = [r for r in out["rows"] if r["subset"] == "all"]
    rectified = [(r["qd.layers"], r["epsilon"], r["scorer"]) for r in rows if r["method"] == "rectified"]
    assert sorted(rectified) == sorted((n, e, s) for n in LAYERS for e in EPSILONS for s in SCORERS)  # each once
    plain = [r for r in rows if r["method"] == "plain"]
    assert {r["scorer"] for r in plain} == SCORERS and len(plain) == len(SCORERS)
    assert all(math.isnan(r["epsilon"]) and r.get("qd.layers") is None for r in plain)
    for r in rows:
        if r["method"] == "rectified":  # compared with the plain run of the same scorer
            assert r["baseline_input"] == str(gen / "plain" / "generations.jsonl")

    md = out["markdown"].read_text()
    assert "| method | epsilon | qd.layers | scorer | subset |" in md and "swept keys: qd.layers." in md
    assert "| plain | - | - | keyword | all |" in md and "| rectified | 0.500 | 2 | keyword | all |" in md
    assert out["csv"].read_text().startswith("method,epsilon,qd.layers,scorer,subset,")


def qd_rows(all_overridden: bool) -> list[dict]:
    """Rows of a plain run + Q_Ds of 6 / 12 / 30 blocks x q_min -1 / -2, as evaluate.py describes them: the saved
    config (qd.layers, qd.q_min) for every Q_D, training overrides only where given (6 and -1 are defaults)."""
    rows = [{"method": "plain", "epsilon": math.nan, "scorer": "s", "subset": "all"}]
    for q_min in (-1.0, -2.0):
        for layers in (30, 6, 12):
            r = {"method": "rectified", "epsilon": 0.1, "scorer": "s", "subset": "all", "qd.layers": layers,
                 "qd.q_min": q_min}
            if all_overridden or layers != 6:
                r["qd.override.model.backbone.num_layers"] = str(layers)
            if all_overridden or q_min != -1.0:
                r["qd.override.model.q_min"] = str(q_min)
            rows.append(r)
    return rows


@pytest.mark.parametrize("all_overridden", [True, False])
def test_swept_keys_name_qd_by_its_saved_config(all_overridden):
    """One column per swept Q_D factor, named by Q_D's saved config, whether or not every training run
    overrode it (a default-size Q_D has no num_layers override: that must not add a half-empty column)."""
    rows = qd_rows(all_overridden)
    swept = swept_keys(rows)
    assert swept == ["qd.layers", "qd.q_min"]
    # Q_D sizes sort by number (6 < 12 < 30), not as text
    assert [r.get("qd.layers") for r in sort_rows(rows, swept)] == [None, 6, 6, 12, 12, 30, 30]
