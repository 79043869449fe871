"""Benchmarks: each module exposes ``run(cfg) -> Iterable[dict]`` yielding one JSON-able row per case.

Speed claims are ratios measured within one process on the same inputs, never absolute timings in tests.
"""

BENCHES: dict[str, str] = {
    "train_step": "rectify.benchmarks.train_step",
    "decoding": "rectify.benchmarks.decoding",
    "generation": "rectify.benchmarks.generation",
}
