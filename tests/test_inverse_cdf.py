"""The two-level inverse-CDF draw (``rows.inverse_cdf``) against the one-pass float64 cumsum it replaced."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.decoding.rows import CDF_BLOCK, draw, inverse_cdf


def reference(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The former draw: searchsorted on a float64 running sum of the whole row."""
    cdf = torch.cumsum(probs.double(), -1)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def agrees(got: torch.Tensor, probs: torch.Tensor, u: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Per row: ``got`` is the reference's token, or ``u`` lies within ``tol`` of a token boundary (where
    the block sums' float32 rounding may decide)."""
    cdf = torch.cumsum(probs.double(), -1)
    target = u * cdf[:, -1:]
    near = ((cdf - target).abs() < tol * cdf[:, -1:]).any(-1)
    return (got == reference(probs, u)) | near


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rows=st.integers(1, 6), vocab=st.sampled_from([3, CDF_BLOCK - 1, CDF_BLOCK, 2 * CDF_BLOCK + 17, 1000]),
       zero_share=st.sampled_from([0.0, 0.5, 0.99]), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_matches_full_cumsum_and_skips_zero_mass(rows: int, vocab: int, zero_share: float, dtype: torch.dtype,
                                                 seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(rows, vocab, generator=g, dtype=dtype)
    probs = torch.where(torch.rand(rows, vocab, generator=g) < zero_share, 0.0, probs)
    probs[:, torch.randint(vocab, (1,), generator=g)] += 0.1  # every row keeps some mass
    probs = probs / probs.sum(-1, keepdim=True)
    u = torch.rand(rows, 1, generator=g, dtype=torch.float64)
    got = inverse_cdf(probs, u)
    assert bool(agrees(got, probs, u).all())
    assert bool((probs.gather(-1, got[:, None]) > 0).all())


def test_extreme_uniforms_stay_on_tokens_with_mass() -> None:
    probs = torch.zeros(3, 3 * CDF_BLOCK + 5)
    probs[:, 7] = 0.25
    probs[:, CDF_BLOCK + 3] = 0.75
    u = torch.tensor([[0.0], [0.2499999], [1.0 - 2**-53]], dtype=torch.float64)
    assert inverse_cdf(probs, u).tolist() == [7, 7, CDF_BLOCK + 3]


def test_draw_is_seeded_per_row_and_greedy_rows_take_the_argmax() -> None:
    probs = torch.softmax(torch.randn(4, 600, generator=torch.Generator().manual_seed(0)), -1)
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(4)]  # noqa: E731
    assert torch.equal(draw(probs, gens()), draw(probs, gens()))
    greedy = torch.tensor([True, False, True, False])
    out = draw(probs, gens(), greedy)
    assert out[greedy].tolist() == probs.argmax(-1)[greedy].tolist()
    assert out[~greedy].tolist() == draw(probs, gens())[~greedy].tolist()
