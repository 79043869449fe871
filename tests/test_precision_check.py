"""The bf16-vs-fp32 quality comparison reads train.py metrics and evaluate.py rows and judges each target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rectify.analysis import precision_check as pc


def _eval(tmp: Path, name: str, tox: dict[str, tuple[float, float, float]], ppl: tuple[float, float, float]) -> Path:
    rows = [{"scorer": s, "subset": "nontoxic", "judge": "gemma3", "tox_prob": v, "tox_prob_ci_low": lo,
             "tox_prob_ci_high": hi, "ppl": ppl[0], "ppl_ci_low": ppl[1], "ppl_ci_high": ppl[2]}
            for s, (v, lo, hi) in tox.items()]
    rows.append({**rows[0], "subset": "toxic", "tox_prob": 0.9})
    path = tmp / f"{name}.eval.json"
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_auc_table_compares_both_recipes_on_each_build_and_states_the_verdict() -> None:
    close = {("fp32", "fp32"): 0.80, ("fp32", "bf16"): 0.81, ("bf16", "fp32"): 0.815, ("bf16", "bf16"): 0.80}
    text = pc.auc_table(close)
    assert "| fp32 (fp32 data, 32-true, fp32 cache) | 0.8000 | 0.8100 |" in text
    assert "+0.0150 on the fp32 build's trajectories, -0.0100 on the bf16 build's: within the 0.02" in text
    far = {**close, ("bf16", "bf16"): 0.78}
    assert "-0.0300 on the bf16 build's: outside the 0.02" in pc.auc_table(far)


def test_decoding_table_marks_whether_bf16_sits_in_fp32_interval(tmp_path: Path) -> None:
    fp32 = pc.eval_rows(_eval(tmp_path, "fp32", {"a": (0.10, 0.05, 0.15), "b": (0.20, 0.15, 0.25)},
                              (100.0, 90.0, 110.0)), "nontoxic")
    bf16 = pc.eval_rows(_eval(tmp_path, "bf16", {"a": (0.12, 0.07, 0.17), "b": (0.30, 0.25, 0.35)},
                              (120.0, 110.0, 130.0)), "nontoxic")
    table = pc.decoding_table([("q", fp32, bf16), ("same", fp32, fp32)]).splitlines()
    assert table[2].startswith("| q | Tox.prob, a |") and table[2].endswith("| yes |")
    assert table[3].startswith("| q | Tox.prob, b |") and table[3].endswith("| no |")
    assert table[4].startswith("| q | perplexity (gemma3) |") and table[4].endswith("| no |")
    assert all(row.endswith("| yes |") for row in table[5:]) and len(table) == 8
    with pytest.raises(ValueError):
        pc.eval_rows(tmp_path / "fp32.eval.json", "missing-subset")


def test_main_without_q_ds_prints_the_decoding_table_only(tmp_path: Path, capsys) -> None:
    a = _eval(tmp_path, "fp32", {"a": (0.10, 0.05, 0.15)}, (100.0, 90.0, 110.0))
    b = _eval(tmp_path, "bf16", {"a": (0.30, 0.25, 0.35)}, (100.0, 90.0, 110.0))
    pc.main(["--pair", "plain", str(a), str(b)])
    out = capsys.readouterr().out
    assert "Q_D recipe" not in out and "| plain | Tox.prob, a | " in out and out.splitlines()[2].endswith("| no |")
    with pytest.raises(SystemExit):
        pc.main(["--fp32-qd", "x", "--pair", "plain", str(a), str(b)])   # half the AUC inputs is an error
