"""How far a Q_D trained on one labeller can go under another scorer: their agreement on the same samples.

Q_D learns to avoid what its labeller calls toxic. Of the samples an evaluation scorer flags, only those the
labeller flags too are Q_D's to remove, so the labeller's share of them bounds the cut that scorer can show;
a scorer that rates ordinary text high (a high median) leaves little room for an EMT cut either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def agreement_rows(scores: Mapping[str, np.ndarray], reference: np.ndarray,
                   threshold: float = 0.5) -> list[dict[str, float]]:
    """One row per scorer: how many samples it flags (``>= threshold``), the share of those the reference
    flags too, the share of the reference's flags it catches, and its score quantiles."""
    ref = np.asarray(reference, dtype=np.float64) >= threshold
    rows = []
    for name, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != ref.shape:
            raise ValueError(f"scorer {name!r}: {values.shape[0]} scores for {ref.shape[0]} samples")
        flagged = values >= threshold
        p10, p50, p90 = np.percentile(values, [10, 50, 90]) if len(values) else (math.nan,) * 3
        rows.append({
            "scorer": name,
            "n": int(len(values)),
            "flagged": int(flagged.sum()),
            "flagged_by_reference_too": float(ref[flagged].mean()) if flagged.any() else math.nan,
            "reference_flags_caught": float(flagged[ref].mean()) if ref.any() else math.nan,
            "p10": float(p10), "median": float(p50), "p90": float(p90),
        })
    return rows
