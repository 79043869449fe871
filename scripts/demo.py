"""`make demo`: run every stage of the offline pipeline as the command a user would type.

Each stage is a subprocess of one of the repo's scripts with Hydra overrides, printed before it runs, so the demo
doubles as a walkthrough. Every choice is made on the dev half of the held-out prompts (plain + every candidate in
``generate.candidates``, then ``scripts/select_rule.py``); the test half is generated on once, for plain and the
selected rule. A stage whose output is complete is skipped (the scripts resume themselves too), so an interrupted
demo continues. It ends with a plain-language summary (``summary.md``), which ``report.md`` opens with.
"""

from __future__ import annotations

import csv
import json
import logging
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from rectify.cli import run_main
from rectify.data.eval_split import DEV, TEST, write_prompt_subset
from rectify.data.jsonl import count_complete
from rectify.decoding.runner import RESUME_KEYS, plain_container, resume_conflicts
from rectify.report.summary import demo_summary
from rectify.report.targets import KEYS as TARGET_KEYS
from rectify.selection import DEV_TABLE, SELECTED, record_candidate

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("demo")   # configs/demo.yaml sends it to demo_run/demo.log only; the console gets say()'s print
BASELINE = "plain"
REWARD_MODEL = "reward_model"  # the judge that scripts/train_reward_model.py trains
PLAIN = ["decoding=plain"]


def say(text: str) -> None:
    """One message of the demo's walkthrough: printed, and kept in ``demo_run/demo.log`` (each stage keeps its own
    log in its run dir), so what ran, what was skipped and why can be read after the terminal is gone."""
    print(text, flush=True)
    log.info(text)


def stop(message: str) -> None:
    log.error(message)
    sys.exit(message)


def run_stage(title: str, script: str, overrides: list[str], timings: dict[str, float]) -> None:
    """Run ``python scripts/<script> <overrides>`` from the repo root; stop the demo if it fails."""
    cmd = [sys.executable, f"scripts/{script}", *overrides]
    say(f"\n=== {title}\n$ {shlex.join(['python', *cmd[1:]])}")
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    timings[title] = time.perf_counter() - start
    log.info("stage finished in %.1f s (exit %d)", timings[title], done.returncode)
    if done.returncode != 0:
        stop(f"demo stopped: stage '{title}' failed (exit {done.returncode}); rerun `make demo` to resume")


def stop_stages_on_sigterm() -> None:
    """Make ``kill <demo pid>`` stop the running stage too. By default SIGTERM ended the demo alone and left its
    stage writing, so a rerun started a second writer; as an exception, it makes ``subprocess.run`` kill the
    stage first (what Ctrl-C already did)."""
    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def skip(title: str, why: str, timings: dict[str, float]) -> None:
    say(f"\n=== {title}\n(skipped: {why})")
    timings[title] = 0.0


def complete_overrides(overrides: Sequence[str], value_model: Path) -> list[str]:
    """A candidate's generate.py overrides: rectified with the demo's Q_D unless they choose otherwise."""
    out = list(overrides)
    keys = {o.split("=", 1)[0].lstrip("+") for o in out}
    if "decoding" not in keys:
        out.insert(0, "decoding=rectified")
    if "decoding=plain" not in out and "value_model_path" not in keys:
        out.append(f"value_model_path={value_model}")
    return out


def candidates(gen: Mapping, value_model: Path) -> dict[str, list[str]]:
    """``generate.candidates`` (null entries dropped) as complete generate.py overrides, by name."""
    raw = OmegaConf.to_container(gen.candidates, resolve=True) if isinstance(gen.candidates, DictConfig) else (
        gen.candidates or {})
    if BASELINE in raw:
        raise ValueError(f"generate.candidates may not be named {BASELINE!r}: that is the baseline run")
    return {name: complete_overrides(ov, value_model) for name, ov in raw.items() if ov is not None}


def wanted_rows(prompts: Path, limit: int | None) -> int:
    """How many prompts a run over ``prompts`` (first ``limit``) generates for."""
    n = count_complete(prompts)
    return n if limit is None else min(int(limit), n)


def generated(target: Path, wanted: int) -> bool:
    """True when ``target`` holds generations for every prompt the run asks for (``wanted``: :func:`wanted_rows`)."""
    out = target / "generations.jsonl"
    if not out.is_file() or not Path(f"{out}.meta.json").is_file():
        return False
    return count_complete(out) == wanted


def planned_config(overrides: Sequence[str]) -> dict[str, Any]:
    """What decides a run's samples (generate.py's ``RESUME_KEYS``) in the config these overrides compose."""
    keep = [o for o in overrides if not o.startswith(("hydra.", "output_path="))]
    if GlobalHydra.instance().is_initialized():   # inside the demo's own Hydra app: its config dir
        cfg = compose("generate", overrides=keep)
    else:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("generate", overrides=keep)
    return {k: plain_container(OmegaConf.select(cfg, k)) for k in RESUME_KEYS}


def _same_paths(config: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(config)
    for key in ("prompts_path", "value_model_path"):
        if out.get(key) is not None:
            out[key] = str((ROOT / str(out[key])).resolve())
    return out


def stale_reason(target: Path, overrides: Sequence[str], wanted: int) -> str | None:
    """Why ``target``'s finished or partial run cannot serve this one (None when it can, or there is none).

    Why: an earlier demo version or settings may have drawn a run from other prompts, more of them, or under
    another rule (e.g. a changed default in ``configs/decoding/``). generate.py refuses to resume such a run, and a
    complete one would otherwise be reused as if this rule had drawn it. A smaller earlier limit under the same
    config is not stale: generate.py resumes it. ``overrides``: the run's generate.py overrides (composed only
    when there is a recorded run to compare).
    """
    out, meta = target / "generations.jsonl", target / "generations.jsonl.meta.json"
    if not out.is_file() or not meta.is_file():
        return None
    if (n := count_complete(out)) > wanted:
        return f"holds {n} prompts, more than the {wanted} asked for"
    record = json.loads(meta.read_text(encoding="utf-8"))
    conflicts = resume_conflicts(_same_paths(record.get("config") or {}), _same_paths(planned_config(overrides)),
                                 record.get("input_digests"))
    if conflicts:
        return "was drawn under another config (" + "; ".join(conflicts[:3]) + ("; ..." if len(conflicts) > 3 else "") + ")"
    return None


def set_aside(target: Path, folder: Path) -> Path:
    """Move a stale run into ``folder`` under a timestamped name (nothing is deleted); returns where it went."""
    folder.mkdir(parents=True, exist_ok=True)
    moved = folder / f"{target.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.move(str(target), moved)
    return moved


def evaluated(runs: Sequence[Path], scorers: Sequence[str]) -> bool:
    """True when every run has an evaluation newer than its generations, under every scorer."""
    for run in runs:
        gen, ev = run / "generations.jsonl", run / "generations.eval.json"
        if not ev.is_file() or ev.stat().st_mtime < gen.stat().st_mtime:
            return False
        rows = json.loads(ev.read_text(encoding="utf-8")).get("rows", [])
        if not set(scorers) <= {r.get("scorer") for r in rows}:
            return False
    return True


def dev_only_text(record: Mapping[str, Any], table: Path) -> str:
    """What a ``dev_only=true`` run ends with: the dev choice and where its table is; the test prompts stay unused."""
    chosen = record["selected"]
    head = (f"Chosen on dev: {chosen}" if chosen else
            f"No candidate met the dev criterion (least bad: {record['least_bad']})")
    return f"{head}. Dev table: {table}. dev_only=true: no test prompt was generated on."


class Demo:
    """The stages, in order; ``runner`` runs one (``run_stage``, or a stand-in in tests)."""

    def __init__(self, cfg: DictConfig, runner: Callable[..., None] = run_stage) -> None:
        self.cfg, self.run = cfg, runner
        self.out = Path(cfg.out_dir)
        self.data_dir = Path(cfg.paths.data_dir) / cfg.data
        self.train_dir = Path(cfg.train_dir)
        self.value_model = self.train_dir / "value_model"
        self.timings: dict[str, float] = {}

    def __call__(self) -> str:
        cfg = self.cfg
        if cfg.fresh:
            shutil.rmtree(self.out, ignore_errors=True)
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.build_and_train()
        gen = cfg.generate
        dev_runs = {BASELINE: PLAIN, **candidates(gen, self.value_model)}
        self.generate_all("dev", dev_runs, self.data_dir / DEV, gen.dev_limit, gen.samples, gen.prompt_subset)
        self.evaluate("dev", list(dev_runs))
        self.run("select a rule on dev (criterion: configs/select_rule.yaml)", "select_rule.py", [
            f"select.inputs={self.out}/dev/generations", f"select.runs=[{','.join(dev_runs)}]",
            f"select.output_dir={self.out}",
            f"hydra.run.dir={self.out}/select_run", *cfg.select_overrides,
        ], self.timings)
        record = json.loads((self.out / SELECTED).read_text(encoding="utf-8"))
        chosen = record["selected"] or record["least_bad"]
        if chosen is None:
            stop("demo stopped: no candidate rule was scored on dev (generate.candidates is empty?)")
        if cfg.dev_only:
            return dev_only_text(record, self.out / DEV_TABLE)
        # the rule as this demo's config spells it (its Q_D at this demo's path), else as recorded on dev
        rule = list(dev_runs.get(chosen) or record_candidate(record, chosen)["overrides"])
        extra = {n: list(ov) for n, ov in (OmegaConf.to_container(gen.extra_runs, resolve=True) or {}).items()}
        test_runs = {BASELINE: PLAIN, chosen: rule, **extra}
        self.generate_all("test", test_runs, self.data_dir / TEST, gen.test_limit, gen.test_samples,
                          gen.test_prompt_subset)
        self.evaluate("test", list(test_runs))
        text = self.summary(rule)
        self.run("report on the test prompts (opens with the summary)", "report.py", [
            f"report.inputs=[{','.join(str(self.out / 'test' / 'generations' / n) for n in test_runs)}]",
            f"report.output_dir={self.out}", f"report.preamble={self.out / 'summary.md'}",
            *self.report_targets(), f"hydra.run.dir={self.out}/report_run",
        ], self.timings)
        return text

    def report_targets(self) -> list[str]:
        """The summary's targets as report.py overrides, every other target key null (the report's own set is the
        headline's), so the report and the summary check the same bar."""
        mine = OmegaConf.to_container(self.cfg.summary.targets, resolve=True) or {}
        return [f"report.targets.{k}={mine.get(k, 'null')}" for k in sorted(TARGET_KEYS)]

    def build_and_train(self) -> None:
        cfg = self.cfg
        self.run(f"build value data (data={cfg.data}: prompts, split dev/test -> continuations -> labels -> "
                 "train/val)", "build_data.py", [f"data={cfg.data}", f"hydra.run.dir={self.out}/build_data"],
                 self.timings)
        self.train_reward_model()
        if (self.value_model / "value_config.json").exists():
            skip("train Q_D", f"{self.value_model} exists", self.timings)
            return
        self.run("train Q_D", "train.py", [
            f"+experiment={cfg.train_experiment}", f"data.train_path={self.data_dir}/train.json",
            f"data.val_path={self.data_dir}/val.json", f"hydra.run.dir={self.train_dir}", *cfg.train_overrides,
        ], self.timings)

    def train_reward_model(self) -> None:
        """Our MiniLM judge, when a judge list names it and its export is missing (`scripts/train_reward_model.py`)."""
        if REWARD_MODEL not in self.cfg.evaluate.scorers:
            return
        export = Path(self.cfg.reward_model_dir)
        title = "train the reward_model judge (MiniLM on the insults training comments)"
        if (export / "config.json").is_file():
            skip(title, f"{export} exists", self.timings)
            return
        self.run(title, "train_reward_model.py", [f"reward.export_dir={export}",
                                                  f"hydra.run.dir={self.out}/train_reward_model"], self.timings)

    def generate_all(self, split: str, runs: Mapping[str, list[str]], prompts: Path, limit: int | None,
                     samples: int, subset: str) -> None:
        gen = self.cfg.generate
        if subset != "all":   # the first `limit` prompts of that stratum only, in a file of their own
            src, prompts = prompts, self.out / split / f"prompts_{subset}.jsonl"
            n = write_prompt_subset(src, prompts, limit, subset)
            say(f"{n} {subset} of the first {limit} prompts of {src} -> {prompts}")
            limit = None
        common = [f"prompts_path={prompts}", f"limit={'null' if limit is None else limit}", f"batch_size={gen.batch_size}",
                  f"decoding.num_return_sequences={samples}", f"decoding.max_new_tokens={gen.max_new_tokens}"]
        wanted = wanted_rows(prompts, limit)
        for i, (name, extra) in enumerate(runs.items(), 1):
            title = f"generate on {split} prompts [{i}/{len(runs)}] {name}"
            target = self.out / split / "generations" / name
            overrides = [*common, *extra, f"output_path={target}/generations.jsonl", f"hydra.run.dir={target}/run"]
            if why := stale_reason(target, overrides, wanted):
                moved = set_aside(target, self.out / split / "replaced")
                say(f"{target} {why}: an earlier demo's run, moved to {moved}")
            if generated(target, wanted):
                skip(title, f"{target}/generations.jsonl is complete", self.timings)
                continue
            self.run(title, "generate.py", overrides, self.timings)

    def evaluate(self, split: str, names: Sequence[str]) -> None:
        ev = self.cfg.evaluate
        title = f"evaluate {split} (toxicity under {len(ev.scorers)} scorers, Gemma-3 perplexity, Dist-n)"
        runs = [self.out / split / "generations" / n for n in names]
        if evaluated(runs, ev.scorers):
            skip(title, "every run has its evaluation", self.timings)
            return
        self.run(title, "evaluate.py", [
            f"eval.input=[{','.join(str(r) for r in runs)}]", f"eval.scorers=[{','.join(ev.scorers)}]",
            f"eval.perplexity_samples={ev.perplexity_samples}", f"hydra.run.dir={self.out}/{split}/evaluate",
        ], self.timings)

    def summary(self, rule: Sequence[str]) -> str:
        """The plain-language summary of the test runs, written to ``summary.md``; ``rule``: the chosen rule's
        generate.py overrides (its "Use it" line)."""
        say("\n=== summary (rectify.report.summary.demo_summary)")
        files = {"report": self.out / "report.md", "plot": self.out / "tradeoff.png",
                 "dev selection": self.out / DEV_TABLE, "choice": self.out / SELECTED}
        text = demo_summary(self.out / "test" / "generations", self.out / SELECTED,
                            OmegaConf.to_container(self.cfg.summary.targets, resolve=True), files=files,
                            rule_overrides=rule)
        (self.out / "summary.md").write_text(text, encoding="utf-8")
        return text

    def print_context(self) -> None:
        """Stage times, the value data and Q_D's training curve, from the files the stages wrote."""
        say("\n" + "=" * 78 + "\nDemo finished. Stage times (s):")
        for title, seconds in self.timings.items():
            say(f"  {seconds:7.1f}  {title}")
        summary = self.data_dir / "summary.json"
        if summary.exists():
            say(f"\nValue data ({summary}):\n  {json.loads(summary.read_text())}")
        metrics = sorted(self.train_dir.glob("**/metrics.csv"))
        if metrics:
            say(f"\nQ_D training metrics (CSV logger): {metrics[-1]}")
            with open(metrics[-1], newline="") as fh:
                val_rows = [r for r in csv.DictReader(fh) if r.get("val/auc_min_q")]
            for r in val_rows:
                say(f"  epoch {r['epoch']}: val/loss {float(r['val/loss']):.4f}  dead-end AUC of min_t Q "
                      f"{float(r['val/auc_min_q']):.3f}  of final-step Q {float(r['val/auc_final_q']):.3f}")
        say(f"\nDev selection: {self.out / DEV_TABLE}")
        if not self.cfg.dev_only:
            say(f"Report: {self.out / 'report.md'}\nTable:  {self.out / 'results.csv'}\n"
                  f"Plot:   {self.out / 'tradeoff.png'}")
        say("")


@hydra.main(version_base="1.3", config_path="../configs", config_name="demo")
def main(cfg: DictConfig) -> None:
    stop_stages_on_sigterm()
    demo = Demo(cfg)
    try:
        text = demo()
    except KeyboardInterrupt:
        log.error("interrupted (Ctrl-C or SIGTERM); the running stage was stopped")
        raise
    demo.print_context()
    say("=" * 78 + "\n" + text)


if __name__ == "__main__":
    run_main(main, "finished stages are kept; rerun `make demo` (or this command) to continue")
