"""Benchmark one Q_D training step: gathered output rows vs the full ``[B, T, V]`` head, and ``32-true`` vs
``bf16-mixed`` (autocast, as Lightning runs it), same batch.

Each case runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own: torch allocates outside
Python's allocator (tracemalloc cannot see it) and never returns freed memory to the OS, so measuring two
cases in one process would charge the second with the first's peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from omegaconf import OmegaConf


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


class _RSSSampler(threading.Thread):
    """Polls the current RSS every millisecond: the peak of the measured steps alone, after warmup."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = _current_rss_mb()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, _current_rss_mb())
            time.sleep(0.001)


def measure(cfg: dict[str, Any], head: str, precision: str = "32-true") -> dict[str, Any]:
    """Time ``steps`` optimizer steps (after ``warmup``) of the SARSA loss with one head; in this process."""
    import contextlib

    import torch

    from rectify.td import TDConfig, sarsa_loss
    from rectify.value_model import ValueModel

    torch.set_num_threads(int(cfg.get("threads") or torch.get_num_threads()))
    torch.manual_seed(cfg["seed"])
    vm = ValueModel.from_lm(cfg["backbone"], cfg["value"]).train()
    V = vm.head.out.out_features
    g = torch.Generator().manual_seed(cfg["seed"])  # the same batch in every case
    B, T = cfg["batch_size"], cfg["seq_len"]
    ids = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    rewards = -torch.randint(0, 2, (B,), generator=g).float()
    opt = torch.optim.AdamW([p for p in vm.parameters() if p.requires_grad], lr=1e-4)
    td = TDConfig()
    if precision not in ("32-true", "bf16-mixed"):
        raise ValueError(f"precision {precision!r}: use 32-true or bf16-mixed")
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16-mixed" \
        else contextlib.nullcontext
    times = []
    sampler = None
    base = 0.0
    for i in range(cfg["warmup"] + cfg["steps"]):
        if i == cfg["warmup"]:  # optimizer state and grad buffers exist now: what remains is the step's own
            base = _current_rss_mb()
            sampler = _RSSSampler()
            sampler.start()
        t0 = time.perf_counter()
        with autocast():
            out = sarsa_loss(vm, ids, mask, rewards, cfg=td, gathered=head == "gathered")
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        vm.polyak_update()
        if i >= cfg["warmup"]:
            times.append(time.perf_counter() - t0)
    assert sampler is not None, "steps must be >= 1"
    sampler.running = False
    sampler.join()
    peak = _rss_mb()
    return {"bench": "train_step", "head": head, "precision": precision, "step_s": round(statistics.median(times), 5),
            "peak_rss_mb": round(peak, 1), "step_rss_delta_mb": round(sampler.peak - base, 1),
            "batch": [B, T], "hidden": vm.head.fc.in_features, "inner": vm.head.fc.out_features, "vocab": V,
            "loss": float(out["loss"].detach())}


def _subprocess(plain: dict[str, Any], head: str, precision: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", __name__, "--head", head, "--precision", precision,
                          "--cfg", json.dumps(plain)], capture_output=True, text=True, timeout=plain.get("timeout_s", 900))
    if res.returncode != 0:
        raise RuntimeError(f"train_step benchmark ({head}, {precision}) failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(cfg: Any) -> Iterator[dict[str, Any]]:
    """Yield one row per (precision, head), each measured in a fresh subprocess on the same seeded batch,
    then the gathered/full ratio per precision and the bf16-mixed/32-true ratio per head."""
    plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    rows = {}
    for precision in plain.get("precisions") or ["32-true"]:
        for head in plain["heads"]:
            rows[precision, head] = _subprocess(plain, head, precision)
            yield rows[precision, head]
        if {(precision, "gathered"), (precision, "full")} <= rows.keys():
            g, f = rows[precision, "gathered"], rows[precision, "full"]
            yield {"bench": "train_step", "head": "gathered/full", "precision": precision,
                   "step_ratio": round(g["step_s"] / f["step_s"], 4),
                   "rss_delta_ratio": round(g["step_rss_delta_mb"] / max(f["step_rss_delta_mb"], 1e-9), 4),
                   "loss_abs_diff": abs(g["loss"] - f["loss"])}
    for head in plain["heads"]:
        if {("32-true", head), ("bf16-mixed", head)} <= rows.keys():
            b, f = rows["bf16-mixed", head], rows["32-true", head]
            yield {"bench": "train_step", "head": head, "precision": "bf16-mixed/32-true",
                   "step_ratio": round(b["step_s"] / f["step_s"], 4), "loss_abs_diff": abs(b["loss"] - f["loss"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--head", choices=["gathered", "full"], required=True)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--cfg", required=True, help="the benchmark config as JSON")
    args = parser.parse_args()
    print(json.dumps(measure(json.loads(args.cfg), args.head, args.precision)), flush=True)


if __name__ == "__main__":
    main()
