"""The offline data pipeline: prompts -> continuations -> labels -> value data, each stage resumable.

``run(cfg)`` takes the ``build`` node of ``configs/build_data.yaml`` (``configs/data/offline.yaml`` or
``paper.yaml``) and a stage name. A stage whose outputs are complete for the same config is skipped;
one that was interrupted continues after its last complete record; a directory holding outputs of
another config is refused unless ``overwrite``.

Files under ``out_dir``: ``prompts_train.jsonl`` / ``prompts_eval.jsonl`` (disjoint source splits),
``generations.jsonl`` (+ ``generations.shards/`` while running), ``labelled.jsonl``, ``train.json`` /
``val.json`` (value data, JSON lines) and ``summary.json``; the eval prompts' dev / test halves
(``prompts_dev.jsonl`` / ``prompts_test.jsonl`` / ``eval_split.json``, see :mod:`rectify.data.eval_split`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rectify.data import assemble as asm
from rectify.data import continuations as cont
from rectify.data import labels as lab
from rectify.data import prompts as pr
from rectify.data.dead_ends import mark_dead_ends
from rectify.data.eval_split import ensure_eval_split
from rectify.data.human import add_human_continuations
from rectify.data.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from rectify.data.stages import Stage, file_digests, fingerprint
from rectify.lm import resolved_dtype_name

log = logging.getLogger(__name__)

STAGES = ("prompts", "continuations", "labels", "assemble")
PROMPTS_TRAIN, PROMPTS_EVAL = "prompts_train.jsonl", "prompts_eval.jsonl"
GENERATIONS, SHARDS = "generations.jsonl", "generations.shards"
LABELLED = "labelled.jsonl"
TRAIN, VAL, SUMMARY = "train.json", "val.json", "summary.json"


def _plain(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def resolve_scorer(cfg: Any):
    """A scorer from its config (``rectify.scoring.build_scorer``: a name or a ``_target_`` mapping such as
    ``configs/scorer/*.yaml`` or the smoke keyword scorer), or an already built scorer object."""
    if callable(cfg) and hasattr(cfg, "name"):
        return cfg
    from rectify.scoring import build_scorer

    return build_scorer(cfg)


# Trainer-group keys that only make sense for fitting or need a Hydra run dir.
_NOT_FOR_PREDICT = ("_target_", "default_root_dir")


def predict_trainer_kwargs(trainer: Any, extra: Any = None) -> dict[str, Any]:
    """Kwargs for the predict Trainer: the ``trainer`` group (e.g. ``trainer=ddp``) without ``_target_`` and
    the run-dir key, then ``build.continuations.trainer`` on top."""
    base: dict[str, Any] = {}
    if trainer is not None:
        raw = OmegaConf.to_container(trainer, resolve=False) if isinstance(trainer, DictConfig) else dict(trainer)
        base = {k: v for k, v in raw.items() if k not in _NOT_FOR_PREDICT}
        base = _plain(OmegaConf.create(base))  # resolve what is left
    return {**base, **(_plain(extra) or {})}


def _lm_fingerprint(lm: Any) -> Any:
    """The generator's config as the continuations' fingerprint sees it: its dtype is an execution detail
    (like the batch size it only moves float rounding; it is recorded in the stage's done info), so data
    built in fp32 before ``dtype: auto`` existed stays valid and resumable."""
    return {**lm, "dtype": "float32"} if isinstance(lm, dict) and "dtype" in lm else lm


def scorer_cfg(build: Any) -> Any:
    override = build.get("scorer_override")
    return override if override is not None else build["scorer"]


def scorer_name(scorer: Any) -> str:
    return str(getattr(scorer, "name", type(scorer).__name__))


class Pipeline:
    """Holds the config and lazily built heavy objects (scorer, tokenizer) shared by the stages."""

    def __init__(self, build: Any, *, overwrite: bool = False, scorer: Any = None, trainer: Any = None) -> None:
        self.cfg = _plain(build)
        self.trainer_kwargs = predict_trainer_kwargs(trainer, self.cfg["continuations"].get("trainer"))
        self.out = Path(self.cfg["out_dir"])
        self.out.mkdir(parents=True, exist_ok=True)
        self.overwrite = overwrite
        self._scorer = scorer
        self._labeller = None
        self.fp: dict[str, str] = {}
        scorer_fp = _plain(scorer_cfg(self.cfg)) if scorer is None else scorer_name(scorer)
        p = self.cfg["prompts"]
        # batching does not change the output; the dev/test split is derived from it (rectify/data/eval_split.py)
        p_fp = {k: v for k, v in p.items() if k not in ("batch_size", "eval_split")}
        files = file_digests(p.get("paths"))   # the user's CSV / JSONL by content (the bundled data: by its sha256)
        self.fp["prompts"] = fingerprint(p_fp, self.cfg["seed"], scorer_fp,
                                         self.cfg["lm"] if p["split_mode"] == "first_tokens" else None,
                                         *([files] if files else []))
        c = {k: v for k, v in self.cfg["continuations"].items()
             if k not in ("trainer", "batch_size", "batch_rows", "num_threads")}
        self.fp["continuations"] = fingerprint(self.fp["prompts"], c, _lm_fingerprint(self.cfg["lm"]), self.cfg["seed"])
        labeller = self._labeller_cfg()
        self.fp["labels"] = fingerprint(self.fp["continuations"], scorer_fp if labeller is None else labeller)
        # a key left at its "off" default does not change the output, so data built before it existed stays valid
        # keys added later leave older data's fingerprint unchanged at their off value
        off = {"truncate": None, "human_continuations": False}
        a_fp = {k: v for k, v in self.cfg["assemble"].items() if not (k in off and v == off[k])}
        self.fp["assemble"] = fingerprint(self.fp["labels"], a_fp, self.cfg["seed"], self.cfg["qd_tokenizer"])

    @property
    def scorer(self):
        if self._scorer is None:
            self._scorer = resolve_scorer(scorer_cfg(self.cfg))
        return self._scorer

    def _labeller_cfg(self) -> Any:
        """``labels.scorer``: a labeller for the continuations apart from the prompts' scorer (None: the same)."""
        return (self.cfg.get("labels") or {}).get("scorer")

    @property
    def labeller(self):
        """What labels continuations and finds their dead ends: ``labels.scorer``, else the prompts' scorer."""
        if self._labeller is None:
            own = self._labeller_cfg()
            self._labeller = self.scorer if own is None else resolve_scorer(own)
        return self._labeller

    def stage(self, name: str, outputs: list[str], scratch: tuple[str, ...] = ()) -> Stage:
        return Stage(self.out, name, self.fp[name], outputs, scratch)

    # ------------------------------------------------------------------ stages

    def prompts(self) -> dict[str, Any]:
        st = self.stage("prompts", [PROMPTS_TRAIN, PROMPTS_EVAL])
        if st.is_done():
            self.eval_split()
            return {"skipped": True, **st.done_info()}
        p = self.cfg["prompts"]
        tokenizer = None
        if p["split_mode"] == "first_tokens":
            from rectify.lm import load_tokenizer

            tokenizer = load_tokenizer(self.cfg["lm"])
        tallies = {split: Counter() for split in ("train", "eval")}
        cands = {split: pr.shuffled(pr.load_candidates(p, split, tokenizer, tallies[split]), self.cfg["seed"], split)
                 for split in ("train", "eval")}
        if not cands["train"]:  # before the stage begins: a rerun with a fixed config is not refused as mixed
            raise pr.NoPromptsError(f"no training prompts: {pr.why_none(p, 'train', tallies['train'])}")
        st.begin(overwrite=self.overwrite)
        counts = {}
        for split, fname, cap in (("train", PROMPTS_TRAIN, p["max_prompts"]),
                                  ("eval", PROMPTS_EVAL, p["max_eval_prompts"])):
            counts[split] = pr.write_prompts(
                cands[split], self.out / fname, self.scorer, split=split, drop_nontoxic=p["drop_nontoxic"],
                toxic_by=p["toxic_by"], threshold=p["threshold"], max_prompts=cap, seed=self.cfg["seed"],
                batch_size=p["batch_size"],
            )
            pr.dropped_after_scoring(tallies[split], len(cands[split]), counts[split], cap)
            if split == "train" and counts[split] == 0:
                st.clear()  # nothing worth keeping; a rerun with another config starts clean
                raise pr.NoPromptsError(f"no training prompts left: {pr.why_none(p, 'train', tallies['train'])}")
            (self.out / fname).touch()  # an empty split still counts as written
        info = {"train_prompts": counts["train"], "eval_prompts": counts["eval"]}
        if not counts["eval"]:
            info["eval_empty"] = pr.why_none(p, "eval", tallies["eval"])
        st.finish(info)
        self.eval_split()
        return info

    def eval_split(self) -> None:
        """Dev / test halves of the eval prompts, written when missing or stale (cheap; no fingerprint), so
        data built before the split existed gets them without regenerating anything."""
        rec = ensure_eval_split(self.out, self.cfg["prompts"].get("eval_split"))
        log.info("eval prompts split (seed %s): %d dev, %d test (%s)", rec["seed"], rec["dev"]["n"],
                 rec["test"]["n"], self.out / "eval_split.json")

    def continuations(self) -> dict[str, Any]:
        st = self.stage("continuations", [GENERATIONS], scratch=(SHARDS,))
        if st.is_done():
            return {"skipped": True, **st.done_info()}
        shard_dir = self.out / SHARDS
        st.begin(overwrite=self.overwrite)
        prompts = read_jsonl(self.out / PROMPTS_TRAIN)
        c = self.cfg["continuations"]
        sampling = cont.SamplingConfig(k=c["k"], max_new_tokens=c["max_new_tokens"],
                                       min_new_tokens=c["min_new_tokens"], temperature=c["temperature"],
                                       top_k=c["top_k"], top_p=c["top_p"], seed=self.cfg["seed"],
                                       max_prompt_tokens=c["max_prompt_tokens"])
        module = cont.ContinuationModule(sampling, lm_cfg=self.cfg["lm"], num_threads=c.get("num_threads"))
        trainer = cont.make_trainer(self.trainer_kwargs, shard_dir)
        t0 = time.perf_counter()
        rows = cont.batch_rows(c.get("batch_rows"), self.trainer_kwargs.get("accelerator"))
        batch = c.get("batch_size") or cont.prompts_per_batch(rows, c["k"])
        todo = cont.generate_continuations(prompts, shard_dir, module, trainer, batch_size=batch)
        elapsed = time.perf_counter() - t0
        if not trainer.is_global_zero:
            return {"rank": trainer.global_rank}
        n = cont.merge_shards(shard_dir, prompts, self.out / GENERATIONS)
        info = {"prompts": n, "generations": n * c["k"], "generated_this_run": todo,
                "seconds_this_run": round(elapsed, 1), "dtype": resolved_dtype_name(self.cfg["lm"]),
                "prompts_per_batch": batch}
        st.finish(info)
        shutil.rmtree(shard_dir, ignore_errors=True)
        return info

    def labels(self) -> dict[str, Any]:
        st = self.stage("labels", [LABELLED])
        if st.is_done():
            return {"skipped": True, **st.done_info()}
        st.begin(overwrite=self.overwrite)
        t0 = time.perf_counter()
        n = lab.label_file(self.out / GENERATIONS, self.out / LABELLED, self.labeller,
                           name=scorer_name(self.labeller), batch_prompts=self.cfg["labels"]["batch_prompts"])
        info = {"prompts": n, "labeller": scorer_name(self.labeller), "seconds": round(time.perf_counter() - t0, 1)}
        st.finish(info)
        return info

    def assemble(self) -> dict[str, Any]:
        st = self.stage("assemble", [TRAIN, VAL, SUMMARY])
        if st.is_done():
            return {"skipped": True, **json.loads((self.out / SUMMARY).read_text())}
        st.begin(overwrite=self.overwrite)
        from rectify.lm import load_tokenizer

        a = self.cfg["assemble"]
        acfg = asm.AssembleConfig(**{k: a[k] for k in ("mode", "k", "drop_clean", "threshold", "reward",
                                                        "val_fraction", "skip_empty")}, seed=self.cfg["seed"],
                                  truncate=a.get("truncate"))
        records = read_jsonl(self.out / LABELLED)
        n_human = 0
        if a.get("human_continuations"):
            records, n_human = add_human_continuations(records, read_jsonl(self.out / PROMPTS_TRAIN), self.labeller)
            log.info("human continuations of %d training prompts added as trajectories (labelled)", n_human)
        if acfg.truncate == "dead_end":
            records, n_marked = mark_dead_ends(records, self.labeller, acfg.threshold)
            log.info("dead-end onsets of %d toxic continuations scored (word prefixes)", n_marked)
        train, val, summary = asm.assemble(records, acfg, asm.token_counter(load_tokenizer(self.cfg["qd_tokenizer"])))
        summary["labeller"] = records[0].get("labeller") if records else None
        summary["human_continuations"] = n_human
        write_jsonl_atomic(self.out / TRAIN, train)
        write_jsonl_atomic(self.out / VAL, val)
        write_json_atomic(self.out / SUMMARY, summary)
        st.finish({"rows_train": len(train), "rows_val": len(val)})
        return summary


def stage_warnings(stage: str, info: dict[str, Any]) -> list[str]:
    """What in a finished stage's counts makes the data useless downstream, in words (the build still finishes)."""
    out = []
    if stage == "prompts" and info.get("eval_prompts") == 0:
        why = info.get("eval_empty", "build.prompts.paths.eval names the file for jigsaw_csv / rtp_jsonl")
        out.append(f"no evaluation prompts: prompts_dev/test.jsonl are empty ({why})")
    if stage == "assemble" and info.get("rows_train") and not info.get("toxic_train"):
        out.append("no toxic trajectory in the training data: Q_D can learn nothing about dead ends (check the "
                   "labeller, build.assemble.threshold, or the prompts' toxicity)")
    return out


def run(build: Any, stage: str = "all", *, overwrite: bool = False, scorer: Any = None,
        trainer: Any = None) -> dict[str, Any]:
    """Run one stage or all of them in order; returns ``{stage: info}``. ``trainer``: the Trainer config
    for the continuations (the ``trainer`` group; None = one CPU process)."""
    if stage != "all" and stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)} or all")
    pipe = Pipeline(build, overwrite=overwrite, scorer=scorer, trainer=trainer)
    results: dict[str, Any] = {}
    for name in STAGES if stage == "all" else (stage,):
        t0 = time.perf_counter()
        results[name] = getattr(pipe, name)()
        log.info("stage %s: %s (%.1f s)", name, results[name], time.perf_counter() - t0)
        for problem in stage_warnings(name, results[name]):
            log.warning(problem)
        if results[name].get("rank"):  # a non-zero DDP rank: rank 0 merges and continues alone
            break
    return results
