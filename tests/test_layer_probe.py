from __future__ import annotations

import numpy as np
import pytest

from rectify.analysis.layer_probe import PositionFeatures, max_pool, position_features, probe_layers
from rectify.training.data import ValueRecord


def test_max_pool_takes_each_trajectorys_highest_position():
    scores = np.array([0.1, 0.9, 0.2, 0.3, -1.0])
    owner = np.array([0, 0, 1, 1, 2])
    np.testing.assert_allclose(max_pool(scores, owner, 3), [0.9, 0.3, -1.0])


def _features(rng: np.random.Generator, n: int, signal: float) -> PositionFeatures:
    """Two layers: layer 1 carries the toxic flag in one dimension at one position per trajectory."""
    toxic = (np.arange(n) % 3 == 0).astype(int)
    owner = np.repeat(np.arange(n), 4)
    noise = rng.normal(size=(len(owner), 8))
    informative = noise.copy()
    flag_rows = np.arange(n) * 4 + 2  # the third position of every trajectory
    informative[flag_rows, 0] += signal * toxic
    return PositionFeatures({0: noise, 1: informative}, owner, toxic)


def test_probe_ranks_an_informative_layer_above_noise():
    rng = np.random.default_rng(0)
    rows = probe_layers(_features(rng, 90, 6.0), _features(rng, 60, 6.0), alpha=1.0)
    auc = {r["layer"]: r["val_auc_max_pool"] for r in rows}
    assert auc[1] > 0.95
    assert 0.2 < auc[0] < 0.8


def test_probe_needs_both_classes_in_validation():
    rng = np.random.default_rng(0)
    val = _features(rng, 30, 6.0)
    val.toxic[:] = 0
    with pytest.raises(ValueError, match="both toxic and clean"):
        probe_layers(_features(rng, 30, 6.0), val)


def test_probe_needs_both_classes_in_training():
    """limit_train that keeps only clean trajectories: a constant probe, AUC 0.5 everywhere, said as such."""
    rng = np.random.default_rng(0)
    train = _features(rng, 30, 6.0)
    train.toxic[:] = 0
    with pytest.raises(ValueError, match="training split needs both toxic and clean"):
        probe_layers(train, _features(rng, 30, 6.0))


def test_position_features_cover_the_continuation(tiny_llama):
    model, tok = tiny_llama
    recs = [ValueRecord("you are a very kind person", 0.0, 2, "f:1"), ValueRecord("go away now", -1.0, None, "f:2")]
    feats = position_features(model.eval(), tok, recs, [0, 2], max_length=32)
    lengths = [len(tok(r.text).input_ids) for r in recs]
    assert np.bincount(feats.owner).tolist() == [lengths[0] - 1, lengths[1]]  # from the last prompt token on
    assert feats.layers[2].shape == (len(feats.owner), model.config.hidden_size)
    assert feats.toxic.tolist() == [0, 1]
    with pytest.raises(ValueError, match="layer 9"):
        position_features(model, tok, recs, [9], max_length=32)
