"""scripts/analysis/estimate_caps.py end to end in debug=smoke form: value data in, one row per rule out."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from rectify.lm import LMConfig, RandomInit
from rectify.value_model import ValueModel

ROOT = Path(__file__).resolve().parents[1]


def test_estimate_caps_script_writes_one_row_per_rule(tmp_path):
    lm = LMConfig(source="hub", name_or_path="tiny-llama", family="llama",
                  random_init=RandomInit(num_layers=2, hidden_size=32, num_heads=2, max_positions=64, seed=0))
    qd = ValueModel.from_lm(lm).save_pretrained(tmp_path / "value_model")
    rows = [{"text": f"You are a {w} and I mean it", "reward": [r], "prompt_len": 3}
            for w, r in [("friend", 0), ("idiot", -1), ("star", 0), ("jerk", -1)]]
    data = tmp_path / "val.json"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PROJECT_ROOT": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analysis" / "estimate_caps.py"), "debug=smoke", f"value_model_path={qd}",
         f"input={data}", "grid=[{epsilon:[0.1,0.5]},{epsilon:[0.1],q_scale:[4]}]", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with open(out / "estimate_caps.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["rule"] for r in table] == ["plain", "eps=0.1 original", "eps=0.5 original", "eps=0.1 original x4"]
    assert float(table[0]["toxic_rate"]) == 0.5 and float(table[0]["ess"]) == 4.0
    anatomy = json.loads((out / "q_anatomy.json").read_text())
    assert set(anatomy) == {f"{k}_{part}" for k in ("q_state", "q_spread", "last_advantage", "last_safer_mass")
                            for part in ("toxic", "clean")} | {"last_advantage_auc"}
    assert "eps=0.1 original x4" in (out / "estimate_caps.md").read_text()


def test_a_generations_file_without_scores_says_to_pass_them(tmp_path):
    """input=<generations.jsonl> and no scores=: read as value data it failed with "missing field 'text'"."""
    lm = LMConfig(source="hub", name_or_path="tiny-llama", family="llama",
                  random_init=RandomInit(num_layers=2, hidden_size=32, num_heads=2, max_positions=64, seed=0))
    qd = ValueModel.from_lm(lm).save_pretrained(tmp_path / "value_model")
    gens = tmp_path / "generations.jsonl"
    gens.write_text(json.dumps({"prompt": {"text": "You are"}, "generations": [{"text": " kind"}]}) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"HF_HUB_OFFLINE": "1"}
    base = [sys.executable, str(ROOT / "scripts" / "analysis" / "estimate_caps.py"), "debug=smoke",
            f"value_model_path={qd}", f"input={gens}", f"hydra.run.dir={tmp_path / 'run'}"]
    res = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "is a generations file" in res.stderr and "scores=" in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    res = subprocess.run([*base, f"scores={tmp_path / 'nope.json'}"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 1 and "nope.json does not exist" in res.stderr, res.stderr[-2000:]
