"""bf16 networks, fp32 math: the security condition holds exactly on what is sampled in every dtype."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings

from rectify import precision
from rectify.decoding import CapConfig, DecodingConfig, RectifiedSampler, caps_from_q, project
from rectify.lm import LMLoadError, load_lm
from tests.conftest import tiny_lm_config
from tests.test_decoding_projection import problems
from tests.toy_models import peaky, random_q_model

BF16_EPS = 2.0**-8  # bf16 keeps 8 significant bits: relative rounding <= 2^-9, so 2^-8 bounds a sum of two
AGREE = 4 * BF16_EPS  # stated tolerance: max |p'_bf16 - p'_fp32| of a projection from bf16-rounded inputs


@settings(max_examples=100, deadline=None)
@given(problems(max_v=40))
def test_bf16_inputs_project_in_float32_and_obey_their_caps(pc):
    p, c = pc
    pb, cb = p.bfloat16(), c.bfloat16()
    assume(float(pb.float().sum()) > 0)
    out = project(pb, cb)
    assert out.probs.dtype == torch.float32  # never rounded back to bf16: that could lift a token over its cap
    assert abs(float(out.probs.sum()) - 1) < 1e-5
    if not bool(out.dead_end):
        assert (out.probs <= cb.float() + 1e-6).all()
    ref = project(pb.double(), cb.double())  # the same (rounded) problem in float64
    assert torch.allclose(out.probs.double(), ref.probs, atol=2e-6)


@settings(max_examples=100, deadline=None)
@given(problems(max_v=40, zeros=False))
def test_bf16_and_fp32_projections_agree_to_the_stated_tolerance(pc):
    p, c = pc
    assume(float(c.sum()) >= 1.05)  # away from the dead-end switch, where the answer jumps by design
    exact = project(p.float(), c.float()).probs
    rounded = project(p.bfloat16(), c.bfloat16()).probs
    assert (rounded - exact).abs().max() <= AGREE


@settings(max_examples=100, deadline=None)
@given(problems(max_v=40))
def test_caps_from_bf16_q_are_float32_and_close(pc):
    _, c = pc
    q = -(1.0 - c).float()  # any Q in [-1, 0]
    for rule in (CapConfig(), CapConfig(q_scale=4.0, mode="normalized", epsilon=0.3)):
        from_bf16 = rule.compute(q.bfloat16())
        assert from_bf16.dtype == torch.float32
        assert torch.equal(from_bf16, rule.compute(q.bfloat16().float()))
        scale = rule.q_scale / (1 - rule.epsilon if rule.mode == "normalized" else 1.0)
        assert (from_bf16 - rule.compute(q)).abs().max() <= scale * BF16_EPS + 1e-7


def test_auto_dtype_follows_the_hardware(monkeypatch):
    precision.cpu_bf16_reason.cache_clear()
    monkeypatch.setattr(precision, "cpu_bf16_reason", lambda: "amx")
    assert precision.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert precision.resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(precision, "cpu_bf16_reason", lambda: None)
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    assert precision.resolve_precision("auto", "cpu") == "32-true"
    assert precision.resolve_precision("16-mixed") == "16-mixed"
    assert precision.resolve_dtype("bf16") == torch.bfloat16 and precision.resolve_dtype(None) == torch.float32
    with pytest.raises(LMLoadError, match="unknown dtype"):
        load_lm({**vars(tiny_lm_config("gpt2")), "dtype": "int3"})


def test_bf16_models_sample_from_a_float32_distribution_that_obeys_the_caps():
    gen, tok = load_lm(tiny_lm_config("llama"))
    gen = peaky(gen).to(torch.bfloat16)
    vm = random_q_model("llama").to(torch.bfloat16)
    for extra in ({}, {"top_k": 50}, {"support_mass": 0.9}):
        s = RectifiedSampler(gen, tok, vm, DecodingConfig(epsilon=0.9, max_new_tokens=4, **extra))
        ids, mask = s.encode(["Hello there, how are", "x"])
        from rectify.decoding.forward import lm_step, q_hidden_step
        from rectify.lm import position_ids_from_mask

        pos = position_ids_from_mask(mask)
        logits, _, _ = lm_step(gen, ids, mask, pos)
        qh, _ = q_hidden_step(vm, ids, mask, pos)
        probs, _, sup = s.step_distribution(logits, qh, {})
        assert probs.dtype == torch.float32 and torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-5)
        caps = caps_from_q(vm.q_values(qh).float()[:, : len(tok)], 0.9, 1e-5)
        checked = torch.ones_like(probs, dtype=torch.bool)
        if sup is not None and s.cfg.support_mass < 1:  # only the kept set is rectified (the approximation)
            checked = torch.zeros_like(checked).scatter(-1, sup.index, sup.valid)
        # bf16 head: the sparse path's gathered dot products round differently from the full matmul
        assert (probs[checked] <= caps[checked] + 2 * BF16_EPS).all()
        assert s.generate(["Hello"], seeds=0).sequences.shape == (1, 4)
