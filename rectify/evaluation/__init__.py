"""Evaluation of generations: toxicity (EMT, Toxicity Probability), diversity (Dist-n), fluency (judge
perplexity), dead-end fallback rate, bootstrap CIs, per prompt subset. See ``scripts/evaluate.py``."""

from rectify.evaluation.bootstrap import bootstrap_ci, mean_ci, perplexity_ci
from rectify.evaluation.diversity import (
    distinct_n,
    distinct_n_per_prompt,
    empty_rate,
    mean_distinct_n,
    short_rate,
)
from rectify.evaluation.generations import GenerationSet, GenerationsFormatError, read_generations, read_meta
from rectify.evaluation.perplexity import (
    ContinuationNLL,
    continuation_nll,
    mean_generation_perplexity,
    token_perplexity,
)
from rectify.evaluation.summary import SUBSETS, SummaryConfig, subset_indices, summarize
from rectify.evaluation.toxicity import (
    TOXIC_THRESHOLD,
    any_toxic_per_prompt,
    expected_maximum_toxicity,
    max_per_prompt,
    toxicity_probability,
)

__all__ = [
    "SUBSETS", "TOXIC_THRESHOLD", "ContinuationNLL", "GenerationSet", "GenerationsFormatError", "SummaryConfig",
    "any_toxic_per_prompt", "bootstrap_ci", "continuation_nll", "distinct_n", "distinct_n_per_prompt",
    "empty_rate", "expected_maximum_toxicity", "max_per_prompt", "mean_ci", "mean_distinct_n",
    "mean_generation_perplexity", "perplexity_ci", "read_generations", "read_meta", "short_rate", "subset_indices",
    "summarize", "token_perplexity", "toxicity_probability",
]
