"""Q_D calibration: a monotone map raw Q -> -P(toxic ending), fitted on validation steps, saved with Q_D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.calibration import CALIBRATION_FILE, QCalibration, calibrate, fit_isotonic
from rectify.training.data import ValueCollator
from rectify.value_model import ValueModel


def test_isotonic_fit_recovers_a_compressed_value_scale():
    # raw Q compressed 10x toward 0: the true risk of a step with raw Q is -10 q
    rng = np.random.default_rng(0)
    q = -rng.uniform(0, 0.1, 20_000)
    toxic = rng.uniform(size=q.size) < -10 * q
    cal = fit_isotonic(q, toxic)
    mapped = cal(torch.tensor([-0.09, -0.05, -0.01], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(mapped, [-0.9, -0.5, -0.1], atol=0.06)
    assert cal.stats["brier_calibrated"] < cal.stats["brier_raw"]
    assert all(-1.0 <= y <= 0.0 for y in cal.y)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1.0, 0.0), min_size=2, max_size=60, unique=True),
       st.lists(st.floats(-1.2, 0.2), min_size=1, max_size=40))
def test_map_is_monotone_bounded_and_matches_numpy_interp(xs, qs):
    xs = sorted(xs)
    ys = sorted(np.linspace(-1, 0, len(xs)) ** 2 * -1)  # any non-decreasing knots in [-1, 0]
    ys = sorted(ys)
    cal = QCalibration(x=xs, y=list(ys))
    q = torch.tensor(sorted(qs), dtype=torch.float64)
    out = cal(q)
    np.testing.assert_allclose(out.numpy(), np.interp(q.numpy(), xs, ys), atol=1e-9)
    assert bool((out[1:] >= out[:-1] - 1e-12).all())
    assert bool(((out >= -1) & (out <= 0)).all())
    # bf16 input: computed in float32, same answer up to bf16 rounding of the input
    out_bf16 = cal(q.to(torch.bfloat16))
    assert out_bf16.dtype == torch.float32
    np.testing.assert_allclose(out_bf16.numpy(), np.interp(q.to(torch.bfloat16).double().numpy(), xs, ys),
                               atol=1e-5)


def test_map_refuses_decreasing_knots():
    with pytest.raises(ValueError, match="non-decreasing"):
        QCalibration(x=[-1.0, 0.0], y=[0.0, -1.0])


def _batches(tok, n: int = 8):
    texts = [f"sample number {i} says hello" for i in range(n)]
    rewards = [-1.0 if i % 2 else 0.0 for i in range(n)]
    items = []
    for text, r in zip(texts, rewards, strict=True):
        ids = tok(text)["input_ids"]
        items.append({"input_ids": ids, "reward": r, "prompt_len": 2})
    return [ValueCollator(tok.pad_token_id)(items[:4]), ValueCollator(tok.pad_token_id)(items[4:])]


def test_calibration_saved_with_q_d_is_applied_on_load(tiny_llama, tmp_path):
    model, tok = tiny_llama
    vm = ValueModel.from_backbone(model, {"init_from_lm_head": False}, tok).eval()
    cal = calibrate(vm, _batches(tok))
    assert cal.stats["pairs"] > 0 and 0 < cal.stats["toxic_share"] < 1
    out = vm.save_pretrained(tmp_path / "vm")
    cal.save(out)
    ids = tok(["a test of calibration"], return_tensors="pt")
    with torch.no_grad():
        raw = vm(ids["input_ids"], ids["attention_mask"])
        loaded = ValueModel.from_pretrained(out)  # calibration="auto" finds calibration.json
        torch.testing.assert_close(loaded(ids["input_ids"], ids["attention_mask"]), cal(raw))
        plain = ValueModel.from_pretrained(out, calibration=False)
        torch.testing.assert_close(plain(ids["input_ids"], ids["attention_mask"]), raw)
    # a loaded calibrated Q_D saves its map again
    again = loaded.save_pretrained(tmp_path / "vm2")
    assert QCalibration.load(again) == cal


def test_required_calibration_missing_is_a_clear_error(tiny_llama, tmp_path):
    model, tok = tiny_llama
    out = ValueModel.from_backbone(model, {"init_from_lm_head": False}, tok).save_pretrained(tmp_path / "vm")
    assert ValueModel.from_pretrained(out).q_transform is None
    with pytest.raises(FileNotFoundError, match=CALIBRATION_FILE):
        ValueModel.from_pretrained(out, calibration=True)


def test_train_fits_calibration_on_validation_and_the_card_names_it(tmp_path):
    from hydra import compose, initialize_config_dir

    from rectify.training.run import train

    configs = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "+experiment=smollm2", "debug=smoke"])
    assert cfg.calibration.enabled  # the default recipe calibrates
    metrics = train(cfg)
    export = tmp_path / "value_model"
    cal = QCalibration.load(export)
    assert cal is not None and cal.stats["pairs"] == metrics["calibration/pairs"]
    assert CALIBRATION_FILE in (export / "README.md").read_text()
    assert isinstance(ValueModel.from_pretrained(export).q_transform, QCalibration)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16_bit_q_is_looked_up_bitwise_equal_to_the_interpolation(dtype):
    cal = fit_isotonic(np.linspace(-1, 0, 400), (np.random.default_rng(0).random(400) < np.linspace(0.9, 0.01, 400)))
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    q = torch.cat([every, (torch.rand(3000, generator=torch.Generator().manual_seed(1)) * -1.2).to(dtype)])
    got, want = cal(q.reshape(-1, 8)), cal.interpolate(q.reshape(-1, 8))
    assert got.dtype == torch.float32 and got.shape == (len(q) // 8, 8)
    assert torch.equal(torch.nan_to_num(got, nan=7.0), torch.nan_to_num(want, nan=7.0))
    assert torch.equal(cal(q[:5].float()), cal.interpolate(q[:5].float()))   # wider dtypes interpolate directly
    assert len(set(cal.y)) > 3   # a map with many levels, so equality is not trivially met


def test_calibrating_a_saved_q_d_updates_its_model_card(tiny_llama, tmp_path):
    """scripts/calibrate.py on a Q_D saved without a calibration: the card no longer says "None"; the rest of
    the card is kept."""
    from rectify.model_card import CARD_FILE, refresh_calibration_section

    model, tok = tiny_llama
    vm = ValueModel.from_backbone(model, {"init_from_lm_head": False}, tok).eval()
    out = vm.save_pretrained(tmp_path / "vm")
    before = (out / CARD_FILE).read_text()
    assert "None: Q_D's raw values enter the cap" in before
    vm.q_transform = calibrate(vm, _batches(tok))
    refresh_calibration_section(out, vm)
    after = (out / CARD_FILE).read_text()
    assert "None: Q_D's raw values" not in after and "`calibration.json`: a monotone" in after
    head, tail = before.split("## Calibration")[0], before.split("## Recommended decoding")[1]
    assert after.startswith(head) and after.endswith(tail)
