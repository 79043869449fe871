"""``reward_model``: a transformers sequence classifier we fine-tune ourselves
(``scripts/train_reward_model.py``), loaded from its exported directory. P(toxic) = softmax(logits)[toxic_index].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rectify.scoring.base import Scorer, _check_texts, torch_threads


class RewardModelScorer(Scorer):
    name = "reward_model"

    def __init__(self, path: str, max_length: int = 128, toxic_index: int = 1, batch_size: int = 64,
                 device: str = "cpu", num_threads: int | None = None, progress: bool | None = None):
        super().__init__(batch_size=batch_size, progress=progress, progress_min=512)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path_ = Path(path)
        if not (path_ / "config.json").is_file():
            raise FileNotFoundError(
                f"reward model dir {path_} has no config.json; train one with `python scripts/train_reward_model.py` "
                "and pass scorer.path=<its export dir>"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path_)
        self.model = AutoModelForSequenceClassification.from_pretrained(path_).to(device).eval()
        self.max_length = int(max_length)
        self.toxic_index = int(toxic_index)
        self.device = device
        self.num_threads = num_threads

    def __call__(self, texts) -> np.ndarray:
        """Scores in input order; batches are formed over length-sorted texts so little padding is computed."""
        texts = _check_texts(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty(len(texts), dtype=np.float64)
        out[order] = super().__call__([texts[i] for i in order])
        return out

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch_threads(self.num_threads), torch.inference_mode():
            logits = self.model(**enc).logits.float()
        return torch.softmax(logits, dim=-1)[:, self.toxic_index].cpu().double().numpy()
