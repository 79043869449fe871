"""``reward_model``: a transformers sequence classifier we fine-tune ourselves
(``scripts/train_reward_model.py``), loaded from its exported directory. P(toxic) = softmax(logits)[toxic_index].

The loading, batching and reading of a label are :class:`~rectify.scoring.hf_classifier.HFClassifierScorer`'s;
this scorer only insists on a local export dir, with a message that says how to make one.
"""

from __future__ import annotations

from pathlib import Path

from rectify.scoring.hf_classifier import HFClassifierScorer


class RewardModelScorer(HFClassifierScorer):
    name = "reward_model"

    def __init__(self, path: str, max_length: int = 128, toxic_index: int = 1, batch_size: int = 64,
                 device: str = "cpu", num_threads: int | None = None, progress: bool | None = None):
        path_ = Path(path)
        if not (path_ / "config.json").is_file():
            raise FileNotFoundError(
                f"reward model dir {path_} has no config.json; train one with `python scripts/train_reward_model.py` "
                "and pass scorer.path=<its export dir>"
            )
        super().__init__(str(path_), label=int(toxic_index), activation="softmax", max_length=max_length,
                         batch_size=batch_size, device=device, num_threads=num_threads, progress=progress)
        self.name = "reward_model"
