"""``scorer=hf_classifier``: tiny random BERT classifiers saved locally (softmax and multi-label sigmoid),
loaded by path through Hydra, scored in batches; a Hub name fails offline with load_lm's message."""

from __future__ import annotations

from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from rectify.lm import LMLoadError, load_lm
from rectify.scoring import build_scorer
from rectify.scoring.hf_classifier import HFClassifierScorer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WORDS = "you are a nice kind stupid idiot person the weather is today".split()
TEXTS = ["you are a stupid idiot", "nice", "the weather is nice today", "you are a kind person", "idiot"]
JIGSAW = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def save_classifier(directory: Path, labels: list[str], multi_label: bool) -> Path:
    """A 1-layer, 32-wide random BERT classifier with a 16-word WordPiece vocabulary."""
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
                     problem_type="multi_label_classification" if multi_label else "single_label_classification")
    BertForSequenceClassification(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def softmax_dir(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("clf") / "softmax", ["neutral", "toxic"], multi_label=False)


@pytest.fixture(scope="module")
def sigmoid_dir(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("clf") / "sigmoid", JIGSAW, multi_label=True)


def logits_one_by_one(directory: Path, texts: list[str]) -> torch.Tensor:
    model = BertForSequenceClassification.from_pretrained(directory).eval()
    tok = BertTokenizerFast.from_pretrained(directory)
    with torch.no_grad():
        return torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts])


def compose_scorer(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("build_data", overrides=list(overrides)).scorer


def test_softmax_classifier_reads_the_named_label(softmax_dir):
    s = HFClassifierScorer(str(softmax_dir), label="TOXIC", batch_size=2)  # case-insensitive label name
    assert (s.activation, s.labels, s.label_index, s.label) == ("softmax", ("neutral", "toxic"), 1, "toxic")
    expected = torch.softmax(logits_one_by_one(softmax_dir, TEXTS), -1)[:, 1].double().numpy()
    np.testing.assert_allclose(s(TEXTS), expected, atol=1e-5)  # padded, length-sorted batches: same scores
    every = s.scores_all(TEXTS)
    np.testing.assert_allclose(every["neutral"] + every["toxic"], 1.0, atol=1e-6)
    np.testing.assert_allclose(every["toxic"], expected, atol=1e-5)
    np.testing.assert_allclose(HFClassifierScorer(str(softmax_dir), label=0)(TEXTS), 1 - expected, atol=1e-5)


def test_multi_label_classifier_uses_sigmoid(sigmoid_dir):
    s = HFClassifierScorer(str(sigmoid_dir), label="insult", batch_size=3)
    assert s.activation == "sigmoid" and s.labels == tuple(JIGSAW)
    probs = torch.sigmoid(logits_one_by_one(sigmoid_dir, TEXTS)).double().numpy()
    np.testing.assert_allclose(s(TEXTS), probs[:, JIGSAW.index("insult")], atol=1e-5)
    every = s.scores_all(TEXTS)
    assert list(every) == JIGSAW
    np.testing.assert_allclose(np.stack([every[k] for k in JIGSAW], 1), probs, atol=1e-5)


@pytest.mark.parametrize("kind,label", [("softmax", "toxic"), ("sigmoid", "toxic"), ("sigmoid", "4")])
def test_composed_through_hydra(softmax_dir, sigmoid_dir, kind, label):
    directory = {"softmax": softmax_dir, "sigmoid": sigmoid_dir}[kind]
    cfg = compose_scorer("scorer=hf_classifier", f"scorer.name_or_path={directory}", f"scorer.label={label}")
    a, b = build_scorer(cfg), hydra.utils.instantiate(cfg)
    assert a.activation == b.activation == kind
    assert a.label == ("insult" if label == "4" else "toxic")
    scores = a(TEXTS)
    assert scores.shape == (len(TEXTS),) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, b(TEXTS))


def test_hub_name_offline_fails_like_load_lm(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    same = r"(?s)^could not load 'unitary/toxic-bert' from the Hugging Face Hub or a local dir .*\nThis machine may be offline"
    with pytest.raises(LMLoadError, match=same):
        build_scorer(compose_scorer("scorer=toxic_bert"))
    with pytest.raises(LMLoadError, match=same):
        load_lm({"source": "hub", "name_or_path": "unitary/toxic-bert"})


def test_bad_label_and_options_are_clear_errors(softmax_dir):
    with pytest.raises(ValueError, match=r"'hate' not among .*\['neutral', 'toxic'\]"):
        HFClassifierScorer(str(softmax_dir), label="hate")
    with pytest.raises(ValueError, match="out of range"):
        HFClassifierScorer(str(softmax_dir), label=2)
    with pytest.raises(ValueError, match="activation"):
        HFClassifierScorer(str(softmax_dir), activation="relu")


@pytest.mark.parametrize("preset,model,label", [
    ("toxic_bert", "unitary/toxic-bert", "toxic"),
    ("roberta_toxicity", "s-nlp/roberta_toxicity_classifier", "toxic"),
    ("toxic_comment_model", "martin-ha/toxic-comment-model", "toxic"),
    ("roberta_hate_dynabench", "facebook/roberta-hate-speech-dynabench-r4-target", "hate"),
])
def test_presets_name_a_public_classifier(preset, model, label):
    cfg = OmegaConf.to_container(compose_scorer(f"scorer={preset}"))
    assert cfg["_target_"] == "rectify.scoring.hf_classifier.HFClassifierScorer"
    assert (cfg["name_or_path"], cfg["label"]) == (model, label)
