"""`make demo`: run every stage of the offline pipeline as the command a user would type.

Each stage is a subprocess of one of the repo's scripts with Hydra overrides, printed before it runs, so
the demo doubles as a walkthrough. A stage whose output is complete is skipped (the scripts resume
themselves too), so an interrupted demo continues. Outputs: ``outputs/demo/{report.md,results.csv,tradeoff.png}``.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]


def run_stage(title: str, script: str, overrides: list[str], timings: dict[str, float]) -> None:
    """Run ``python scripts/<script> <overrides>`` from the repo root; stop the demo if it fails."""
    cmd = [sys.executable, f"scripts/{script}", *overrides]
    print(f"\n=== {title}\n$ {shlex.join(['python', *cmd[1:]])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    timings[title] = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"demo stopped: stage '{title}' failed (exit {done.returncode}); rerun `make demo` to resume")


def skip(title: str, why: str, timings: dict[str, float]) -> None:
    print(f"\n=== {title}\n(skipped: {why})", flush=True)
    timings[title] = 0.0


@hydra.main(version_base="1.3", config_path="../configs", config_name="demo")
def main(cfg: DictConfig) -> None:
    out = Path(cfg.out_dir)
    if cfg.fresh:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(Path(cfg.paths.data_dir) / cfg.data, ignore_errors=True)
    timings: dict[str, float] = {}
    data_dir = Path(cfg.paths.data_dir) / cfg.data

    run_stage(f"1/5 build value data (data={cfg.data}: prompts -> continuations -> labels -> train/val)",
              "build_data.py", [f"data={cfg.data}", f"hydra.run.dir={out}/build_data"], timings)

    train_dir = Path(cfg.train_dir)
    value_model = train_dir / "value_model"
    if (value_model / "value_config.json").exists():
        skip("2/5 train Q_D", f"{value_model} exists", timings)
    else:
        run_stage("2/5 train Q_D", "train.py", [
            f"+experiment={cfg.experiment}", f"data.train_path={data_dir}/train.json",
            f"data.val_path={data_dir}/val.json", f"hydra.run.dir={train_dir}", *cfg.train_overrides,
        ], timings)

    gen = cfg.generate
    common = [f"prompts_path={data_dir}/prompts_eval.jsonl", f"limit={gen.limit}", f"batch_size={gen.batch_size}",
              f"decoding.num_return_sequences={gen.samples}", f"decoding.max_new_tokens={gen.max_new_tokens}"]
    runs = [("plain", ["decoding=plain"])] + [
        (f"eps_{eps}", ["decoding=rectified", f"decoding.epsilon={eps}", f"value_model_path={value_model}",
                        *gen.rectified_overrides])
        for eps in gen.epsilons
    ] + [(name, list(overrides)) for name, overrides in (gen.get("extra_runs") or {}).items()]
    for i, (name, extra) in enumerate(runs, 1):
        target = out / "generations" / name
        run_stage(f"3/5 generate [{i}/{len(runs)}] {name}", "generate.py", [
            *common, *extra, f"output_path={target}/generations.jsonl", f"hydra.run.dir={target}/run",
        ], timings)

    ev = cfg.evaluate
    run_stage(f"4/5 evaluate (toxicity under {len(ev.scorers)} scorers, Gemma-3 perplexity, Dist-n)", "evaluate.py", [
        f"eval.input={out}/generations", f"eval.scorers=[{','.join(ev.scorers)}]",
        f"eval.perplexity_samples={ev.perplexity_samples}", f"hydra.run.dir={out}/evaluate",
    ], timings)
    run_stage("5/5 report", "report.py", [
        f"report.inputs={out}/generations", f"report.output_dir={out}", f"hydra.run.dir={out}/report_run",
    ], timings)
    summarize(out, data_dir, train_dir, timings)


def summarize(out: Path, data_dir: Path, train_dir: Path, timings: dict[str, float]) -> None:
    """Print what was built and measured, from the files the stages wrote."""
    print("\n" + "=" * 78 + "\nDemo finished. Stage times (s):")
    for title, seconds in timings.items():
        print(f"  {seconds:7.1f}  {title}")
    summary = data_dir / "summary.json"
    if summary.exists():
        print(f"\nValue data ({summary}):\n  {json.loads(summary.read_text())}")
    metrics = sorted(train_dir.glob("**/metrics.csv"))
    if metrics:
        print(f"\nQ_D training metrics (CSV logger): {metrics[-1]}")
        with open(metrics[-1], newline="") as fh:
            val_rows = [r for r in csv.DictReader(fh) if r.get("val/auc_min_q")]
        for r in val_rows:
            print(f"  epoch {r['epoch']}: val/loss {float(r['val/loss']):.4f}  dead-end AUC of min_t Q "
                  f"{float(r['val/auc_min_q']):.3f}  of final-step Q {float(r['val/auc_final_q']):.3f}")
    report = out / "report.md"
    print(f"\nReport: {report}\nTable:  {out / 'results.csv'}\nPlot:   {out / 'tradeoff.png'}\n")
    if report.exists():
        print(report.read_text())


if __name__ == "__main__":
    main()
