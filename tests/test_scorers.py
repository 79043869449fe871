"""Scorers on fixed texts: stable, in [0, 1], insult above benign; the LSTMs reproduce TensorFlow's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from rectify.scoring import REGISTRY, build_scorer

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "scorer"
INSULT = "You are a stupid idiot!"
BENIGN = "Thanks for the lovely dinner."
TEXTS = [INSULT, "Hello, how are you today?", "", "I will kill you, you f***ing moron", BENIGN]

# P(label) computed by TensorFlow itself (tf_keras 2.21 loading tox-block's .h5 for the Keras-2 hard_sigmoid;
# Keras 3 + the package's model.py for toxic-comment-classifier), for TEXTS. Our PyTorch port matched TF to
# <= 2.4e-7 on 306 texts (insults test split + edge cases) when verified.
TF_REFERENCE = {
    "jigsaw_lstm": {
        "toxic": [0.9962128, 0.05185334, 0.01949718, 0.9956611, 0.000295252],
        "threat": [0.003420711, 0.002409135, 0.0006492088, 0.8975001, 7.169566e-06],
    },
    "jigsaw_lstm_tcc": {
        "toxic": [0.9972361, 0.08216744, 0.06753404, 0.978179, 0.005416987],
        "threat": [0.01469251, 0.0007760067, 0.001005654, 0.1979377, 2.53958e-05],
    },
}
# Our own scores for the other local scorers, recorded once (regression guard).
FIXED = {
    "profanity_svm": [0.99999999, 0.03186696, 0.03637575],
    "hatesonar": [0.54588354, 0.40579575, 0.32496178],
}

LOCAL = ["jigsaw_lstm", "jigsaw_lstm_tcc", "profanity_svm", "hatesonar"]


@pytest.fixture(scope="module")
def scorers():
    return {name: build_scorer(name) for name in LOCAL}


@pytest.mark.parametrize("name", LOCAL)
def test_scores_valid_stable_and_ranked(scorers, name):
    s = scorers[name]
    a = s(TEXTS)
    assert a.shape == (len(TEXTS),) and a.dtype == np.float64
    assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_array_equal(a, s(TEXTS))
    assert a[0] > a[-1] + 0.1 and a[3] > a[-1] + 0.1
    assert s.name == name


@pytest.mark.parametrize("name", ["jigsaw_lstm", "jigsaw_lstm_tcc"])
def test_lstm_matches_tensorflow_reference(scorers, name):
    all_scores = scorers[name].scores_all(TEXTS)
    assert tuple(all_scores) == ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
    for label, ref in TF_REFERENCE[name].items():
        np.testing.assert_allclose(all_scores[label], ref, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(scorers[name](TEXTS), all_scores["toxic"])


@pytest.mark.parametrize("name", ["profanity_svm", "hatesonar"])
def test_fixed_scores(scorers, name):
    np.testing.assert_allclose(scorers[name](TEXTS[:3]), FIXED[name], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["jigsaw_lstm", "hatesonar"])
def test_batching_does_not_change_scores(scorers, name):
    s = scorers[name]
    texts = TEXTS * 3
    full = s(texts)
    old = s.batch_size
    try:
        s.batch_size = 2
        np.testing.assert_allclose(s(texts), full, atol=1e-6, rtol=0)
    finally:
        s.batch_size = old


def test_lstm_label_choice(scorers):
    s = scorers["jigsaw_lstm"]
    every = s.scores_all(TEXTS)
    stacked = np.stack(list(every.values()), axis=1)
    for label, expected in [("threat", every["threat"]), ("max", stacked.max(1)), ("mean", stacked.mean(1))]:
        s.label = label
        try:
            np.testing.assert_allclose(s(TEXTS), expected, atol=1e-12)
        finally:
            s.label = "toxic"


def test_truncation_keeps_the_end(scorers):
    """Keras pad_sequences truncates at the front: only the last 100 words count."""
    s = scorers["jigsaw_lstm"]
    long_insult = "hello " * 150 + INSULT
    long_benign = INSULT + " hello" * 150
    a = s([long_insult, long_benign])
    assert a[0] > 0.9 and a[1] < 0.5


def test_hatesonar_labels_sum_to_one(scorers):
    all_scores = scorers["hatesonar"].scores_all(TEXTS)
    total = sum(all_scores.values())
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    np.testing.assert_allclose(scorers["hatesonar"](TEXTS), 1 - all_scores["neither"], atol=1e-12)


def test_bad_input_is_refused(scorers):
    s = scorers["profanity_svm"]
    with pytest.raises(TypeError):
        s("a single string")
    with pytest.raises(TypeError):
        s(["ok", None])
    assert s([]).shape == (0,)


def test_every_registered_scorer_has_a_config():
    stems = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert set(REGISTRY) <= stems
    for preset in stems - set(REGISTRY):  # the others are presets of a registered scorer (public HF classifiers)
        assert OmegaConf.load(CONFIG_DIR / f"{preset}.yaml").defaults[0] in REGISTRY, preset


@pytest.mark.parametrize("name", ["jigsaw_lstm", "hatesonar", "profanity_svm"])
def test_build_from_hydra_config(name):
    import hydra.utils

    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    a = build_scorer(cfg)
    b = hydra.utils.instantiate(cfg)
    assert a.name == b.name == name
    np.testing.assert_allclose(a([INSULT]), b([INSULT]))


def test_unknown_scorer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown scorer"):
        build_scorer("nope")
    with pytest.raises(ValueError, match="_target_"):
        build_scorer({"batch_size": 3})
