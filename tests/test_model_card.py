"""The Q_D model card: save_pretrained writes README.md (HF front matter + data, labeller, recipe, AUC,
recommended decoding, how to load); a train run fills it; push_to_hub uploads it (Hub calls mocked)."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from rectify.decoding.config import DecodingConfig
from rectify.hub import HubPushError
from rectify.model_card import CARD_FILE, CardInfo, run_card_info
from rectify.training.run import train
from rectify.value_model import ValueModel
from tests.conftest import tiny_lm_config

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
SUMMARY = {"rows_train": 120, "rows_val": 30, "toxic_share_train": 0.25, "threshold": 0.5, "labeller": "jigsaw_lstm"}


@pytest.fixture(scope="module")
def qd() -> ValueModel:
    return ValueModel.from_lm(tiny_lm_config("llama", hidden_size=32, num_heads=2, max_positions=64))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data" / "offline"
    data.mkdir(parents=True)
    (data / "summary.json").write_text(json.dumps(SUMMARY))
    return data


def test_card_names_data_auc_and_settings_and_dir_reloads(tmp_path, qd):
    data = data_dir(tmp_path)
    info = CardInfo(train_path=str(data / "train.json"), val_path=str(data / "val.json"),
                    data_summary=SUMMARY, metrics={"val/auc_min_q": 0.8123, "val/loss": 0.0412, "train/loss": 0.05},
                    config={"task_name": "train_smollm2", "model": {"td": {"mode": "td0"}, "optimizer": {"lr": 3e-4}}},
                    recommended={"epsilon": 0.5}, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    out = qd.save_pretrained(tmp_path / "qd", card=info)
    card = (out / CARD_FILE).read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "rectify" and "rectify" in meta["tags"]
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["rectify"]["val_auc_min_q"] == 0.8123 and meta["rectify"]["labeller"] == "jigsaw_lstm"
    assert meta["rectify"]["recommended_decoding"]["epsilon"] == 0.5
    for heading in ("Backbone", "Training data", "Labeller", "Training recipe", "Validation",
                    "Recommended decoding", "How to load"):
        assert f"## {heading}\n" in card
    assert str(data / "train.json") in card and "| rows_train | 120 |" in card and "`jigsaw_lstm`" in card
    assert "**Validation AUC 0.8123**" in card and "train/loss" not in card
    assert "clamp(1 + Q_D(s, a) - epsilon, p_min, p_max)" in card and "decoding.epsilon=0.5" in card
    assert "card.recommended" in card and "td0" in card
    assert huggingface_hub.ModelCard.load(out / CARD_FILE).data.library_name == "rectify"

    back = ValueModel.from_pretrained(out)  # the card is beside the weights, not in their way
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(back(ids), qd.eval()(ids))


def test_card_without_metadata_recommends_the_decoding_defaults(tmp_path, qd):
    card = (qd.save_pretrained(tmp_path / "qd") / CARD_FILE).read_text()
    defaults = DecodingConfig()
    meta = front_matter(card)["rectify"]["recommended_decoding"]
    assert (meta["epsilon"], meta["cap_mode"]) == (defaults.epsilon, defaults.cap_mode)
    assert "rectify's decoding defaults" in card and f"decoding.epsilon={defaults.epsilon}" in card
    assert card.count("Not recorded") == 4  # data, labeller, recipe, validation
    with pytest.raises(ValueError, match="unknown recommended decoding keys"):
        qd.save_pretrained(tmp_path / "bad", card={"recommended": {"epsilonn": 0.2}})


def test_train_run_writes_its_card(tmp_path, capsys):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "+experiment=smollm2", "debug=smoke",
                                          "card.recommended.epsilon=0.3"])
    metrics = train(cfg)
    export = tmp_path / "value_model"
    card = (export / CARD_FILE).read_text()
    assert str(tmp_path / "synthetic_data") in card  # the data the run really read (smoke: generated)
    assert f"**Validation AUC {metrics['val/auc_min_q']:.4f}**" in card
    assert front_matter(card)["rectify"]["recommended_decoding"]["epsilon"] == 0.3
    assert "task_name: train_smollm2" in card  # the resolved experiment config
    assert ValueModel.from_pretrained(export).value_config.q_min == cfg.model.q_min


def test_run_card_info_reads_the_data_summary(tmp_path):
    data = data_dir(tmp_path)
    cfg = {"data": {"train_path": str(data / "train.json"), "val_path": str(data / "val.json")},
           "model": {"backbone": {"source": "smollm2"}}, "card": {"recommended": {"epsilon": None}},
           "hydra": {"run": {}}}
    info = run_card_info(cfg, {"val/auc_min_q": 0.7, "export": "somewhere"})
    assert info.data_summary == SUMMARY and info.metrics == {"val/auc_min_q": 0.7}
    assert info.recommended == {} and info.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "hydra" not in info.config


def test_push_to_hub_uploads_weights_and_card(tmp_path, qd, monkeypatch):
    calls: dict[str, dict] = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = {"repo_id": repo_id, **kwargs}

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload"] = {"repo_id": repo_id, "files": sorted(p.name for p in Path(folder_path).iterdir()), **kwargs}
        calls["card"] = {"text": (Path(folder_path) / CARD_FILE).read_text()}
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc", commit_message="m",
                                          commit_description="", oid="abc")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = qd.push_to_hub("someone/tiny-qd", card={"metrics": {"val/auc_min_q": 0.75}}, private=True)
    assert url == "https://huggingface.co/someone/tiny-qd/commit/abc"
    assert calls["create"] == {"repo_id": "someone/tiny-qd", "repo_type": "model", "private": True, "exist_ok": True}
    assert calls["upload"]["files"] == [CARD_FILE, "backbone", "heads.safetensors", "value_config.json"]
    assert "**Validation AUC 0.7500**" in calls["card"]["text"]

    def offline(self, repo_id, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", offline)
    with pytest.raises(HubPushError, match="(?s)someone/tiny-qd.*huggingface-cli login"):
        qd.push_to_hub("someone/tiny-qd")
