"""Q_D: a causal-LM backbone plus a vocabulary-sized Q head and its Polyak-averaged target copy.

-Q_D(s, a) estimates the chance that taking token ``a`` after prefix ``s`` ends in a toxic text. The model
is saved as one directory (backbone + tokenizer + heads + ``value_config.json``) so decoding can load it
with :meth:`ValueModel.from_pretrained` without the training configs.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rectify.config_utils import config_values
from rectify.lm import cache_kwarg, load_lm, output_cache, position_ids_from_mask, transformer_layers

log = logging.getLogger(__name__)

VALUE_CONFIG_FILE = "value_config.json"
HEADS_FILE = "heads.safetensors"
BACKBONE_DIR = "backbone"


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early once the wanted activation is captured."""


@dataclass
class ValueConfig:
    """Everything about Q_D that is not the backbone; saved next to the weights as JSON."""

    q_min: float = -1.0
    q_max: float = 0.0
    gamma: float = 1.0
    bounded: bool = False  # Q = q_min + (q_max - q_min) * sigmoid(x): in [q_min, q_max] by construction
    hidden_mult: int = 2  # head MLP: hidden -> hidden_mult * hidden -> ReLU -> vocab
    dropout: float = 0.0
    polyak_alpha: float = 0.1  # target <- alpha * online + (1 - alpha) * target
    freeze_backbone: bool = False
    train_top_layers: int | None = None  # n > 0: train only the top n blocks (+ final norm), freeze the rest
    init_from_lm_head: bool = False  # start the head as scale * LM logits + bias (token semantics for free)
    init_scale: float = 0.01
    # where init_scale goes: "rows" (output rows = scale * E, fc = [I; -I]) or "query" (rows = E, fc = scale *
    # [I; -I]). Both compute the same Q at step 0; with frozen output rows the action term is learned through fc,
    # and under "rows" every change to fc reaches Q scaled by init_scale (0.01: the term barely moves from the
    # LM's own logits), under "query" at the embeddings' full scale.
    init_scale_on: str = "rows"
    init_bias: float | None = None  # default: the middle of [q_min, q_max] (before the sigmoid if bounded)
    state_value: bool = False  # Q(s, a) = V(s) + A(s, a): a shared term every step trains
    # keep the head's output rows (and per-token biases) fixed at their init: with init_from_lm_head the
    # action term is then a learned query of the state dotted with the LM's own token embeddings, so what
    # is learned about one token carries over to tokens with similar embeddings instead of every row being
    # fitted to its own few occurrences (which over-fits a small data set)
    freeze_output_rows: bool = False

    @classmethod
    def from_any(cls, cfg: Any) -> ValueConfig:
        """Accept a ValueConfig, a dict or an OmegaConf node (unknown keys are an error)."""
        if isinstance(cfg, ValueConfig):
            return cfg
        out = cls(**config_values(cls, cfg, "value-model"))
        if not out.q_min < out.q_max:
            raise ValueError(f"q_min={out.q_min} must be < q_max={out.q_max}")
        if out.hidden_mult < 1:
            raise ValueError("hidden_mult must be >= 1")
        if out.init_scale_on not in ("rows", "query"):
            raise ValueError(f"init_scale_on={out.init_scale_on!r}; use rows or query")
        return out


class QHead(nn.Module):
    """``hidden -> hidden_mult*hidden -> ReLU -> dropout -> vocab`` (+ optional state value)."""

    def __init__(self, hidden_size: int, vocab_size: int, cfg: ValueConfig):
        super().__init__()
        inner = cfg.hidden_mult * hidden_size
        self.fc = nn.Linear(hidden_size, inner)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(inner, vocab_size)
        self.value = nn.Linear(inner, 1) if cfg.state_value else None
        self.bounded = cfg.bounded
        self.q_min = float(cfg.q_min)
        self.q_max = float(cfg.q_max)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.relu(self.fc(hidden.to(self.fc.weight.dtype))))

    def _finish(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.value is not None:
            x = x + self.value(z)
        if self.bounded:
            x = self.q_min + (self.q_max - self.q_min) * torch.sigmoid(x)
        return x

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Q for every token: ``[..., H] -> [..., V]`` (decoding)."""
        z = self.features(hidden)
        return self._finish(self.out(z), z)

    def taken(self, hidden: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q at the given tokens only: ``[..., H], [...] -> [...]``.

        Gathers the output rows of the taken tokens, so no ``[..., V]`` tensor is ever built: the loss
        needs one value per position, and the vocabulary matmul dominates a training step otherwise.
        """
        z = self.features(hidden)
        w = self.out.weight[actions]  # [..., inner]
        x = (z * w).sum(-1, keepdim=True) + self.out.bias[actions].unsqueeze(-1)
        return self._finish(x, z).squeeze(-1)


def _inverse_bound(q: float, cfg: ValueConfig) -> float:
    """The pre-sigmoid value that maps to ``q`` under the bounded head."""
    p = (q - cfg.q_min) / (cfg.q_max - cfg.q_min)
    p = min(max(p, 1e-4), 1 - 1e-4)
    return float(torch.logit(torch.tensor(p)))


class ValueModel(nn.Module):
    """Backbone causal LM + online Q head + target Q head (no grad, Polyak-averaged)."""

    def __init__(self, backbone: PreTrainedModel, value_config: ValueConfig | Mapping | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None):
        super().__init__()
        self.value_config = ValueConfig.from_any(value_config)
        self.backbone = backbone
        self.tokenizer = tokenizer
        # a monotone map raw Q -> calibrated Q (rectify.calibration), applied by q_values; set by from_pretrained
        self.q_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
        hidden = backbone.config.get_text_config().hidden_size
        vocab = backbone.get_output_embeddings().weight.shape[0] if backbone.get_output_embeddings() is not None \
            else backbone.config.get_text_config().vocab_size
        self.head = QHead(hidden, vocab, self.value_config)
        if self.value_config.init_from_lm_head:
            self._init_head_from_lm()
        self.target_head = copy.deepcopy(self.head)
        self.target_head.requires_grad_(False)
        self.target_head.dropout = nn.Identity()  # bootstrap targets without dropout noise (no weights change)
        self._apply_freezing()
        self._freeze_output_rows()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(cls, causal_lm: PreTrainedModel, value_cfg: Any = None,
                      tokenizer: PreTrainedTokenizerBase | None = None) -> ValueModel:
        return cls(causal_lm, value_cfg, tokenizer)

    @classmethod
    def from_lm(cls, lm_cfg: Any, value_cfg: Any = None) -> ValueModel:
        """Load the backbone with :func:`rectify.lm.load_lm` (``lm_cfg.num_layers`` truncates it)."""
        model, tok = load_lm(lm_cfg)
        return cls(model, value_cfg, tok)

    def _init_head_from_lm(self) -> None:
        """Make the head compute ``init_scale * LM logits + init_bias`` at step 0.

        With ``fc = [I; -I]`` the ReLU pair passes ``h`` through exactly (``relu(h) - relu(-h) = h``), and
        output rows ``[E_a, -E_a]`` give ``E_a . h`` = the LM's logit of ``a``: the head starts from the LM's
        token geometry, so rows of rarely taken tokens are not left random. ``init_scale`` multiplies the rows
        or fc (``init_scale_on``): ReLU is positively homogeneous, so either gives the same function.
        """
        cfg = self.value_config
        emb = self.backbone.get_output_embeddings()
        if emb is None or cfg.hidden_mult < 2:
            raise ValueError("init_from_lm_head needs an LM with an output embedding and hidden_mult >= 2")
        E = emb.weight.detach().float()
        V, H = E.shape
        head = self.head
        bias = cfg.init_bias
        if bias is None:
            bias = 0.0 if cfg.bounded else (cfg.q_min + cfg.q_max) / 2
        elif cfg.bounded:
            bias = _inverse_bound(bias, cfg)
        fc_scale, row_scale = (1.0, cfg.init_scale) if cfg.init_scale_on == "rows" else (cfg.init_scale, 1.0)
        with torch.no_grad():
            eye = torch.eye(H)
            head.fc.weight[: 2 * H].copy_(fc_scale * torch.cat([eye, -eye], 0))
            head.fc.bias[: 2 * H].zero_()
            head.out.weight.zero_()
            head.out.weight[:, :H].copy_(row_scale * E)
            head.out.weight[:, H: 2 * H].copy_(-row_scale * E)
            lm_bias = getattr(emb, "bias", None)
            head.out.bias.fill_(bias)
            if lm_bias is not None:
                head.out.bias.add_(cfg.init_scale * lm_bias.detach().float())
            if head.value is not None:
                head.value.weight.zero_()
                head.value.bias.zero_()

    def _freeze_output_rows(self) -> None:
        """With ``freeze_output_rows``: the head's output rows (set by the LM init or a checkpoint) stay fixed."""
        cfg = self.value_config
        if not cfg.freeze_output_rows:
            return
        if not cfg.init_from_lm_head:
            raise ValueError("freeze_output_rows needs init_from_lm_head (frozen random rows carry no meaning)")
        self.head.out.requires_grad_(False)

    def _apply_freezing(self) -> None:
        cfg = self.value_config
        n = cfg.train_top_layers or 0
        if not cfg.freeze_backbone and n <= 0:
            return
        self.backbone.requires_grad_(False)
        if n > 0:
            layers = transformer_layers(self.backbone)
            for layer in layers[len(layers) - n:]:
                layer.requires_grad_(True)
            base = getattr(self.backbone, "base_model", self.backbone)
            for name in ("ln_f", "norm", "final_layernorm"):
                norm = getattr(base, name, None)
                if isinstance(norm, nn.Module):
                    norm.requires_grad_(True)

    # ------------------------------------------------------------------ forward paths

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None, past_key_values: Any = None,
                      use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """Last-layer hidden states ``[B, T, H]`` (after the final norm) and the KV cache.

        Runs the base model, not the LM head, so no ``[B, T, V]`` logits are built. Without explicit
        ``position_ids`` they follow the attention mask (correct under left padding, with or without a
        cache: the mask then covers the past tokens too).
        """
        if position_ids is None and attention_mask is not None:
            position_ids = position_ids_from_mask(attention_mask)[:, -input_ids.shape[1]:]
        base = getattr(self.backbone, "base_model", self.backbone)
        kwargs: dict[str, Any] = {}
        if past_key_values is None and use_cache:  # decoding: steps write into spare room, no per-step copy
            from rectify.decoding.kv_cache import preallocated_cache

            past_key_values = preallocated_cache(self.backbone.config)
        if past_key_values is not None:
            kwargs[cache_kwarg(type(base))] = past_key_values
        out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=use_cache, return_dict=True, **kwargs)
        return out.last_hidden_state, (output_cache(out) if use_cache else None)

    # ------------------------------------------------------------------ frozen-lower-layer cache

    def split_index(self) -> int | None:
        """Index of the first trained block when only the top ``train_top_layers`` train, else None."""
        n = self.value_config.train_top_layers or 0
        if n <= 0:
            return None
        return max(len(transformer_layers(self.backbone)) - n, 0)

    def _check_cacheable(self) -> tuple[nn.Module, int]:
        k = self.split_index()
        if k is None:
            raise ValueError("caching frozen layers needs train_top_layers > 0")
        base = getattr(self.backbone, "base_model", self.backbone)
        if hasattr(base, "wpe"):  # GPT-2 adds learned positions to inputs_embeds: a cached hidden state can't
            raise ValueError("caching frozen layers needs a rotary-position backbone (Llama, Gemma, ...), not GPT-2")
        return base, k

    @torch.no_grad()
    def lower_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The input of the first trained block ``[B, T, H]``: depends only on frozen weights, so it can be
        computed once per data set and reused every epoch (the CPU cost of a mostly frozen Q_D)."""
        base, k = self._check_cacheable()
        pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        captured: list[torch.Tensor] = []

        def grab(module, args, kwargs):  # the input of block k; stop there (the upper blocks are not needed)
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _StopForward

        # a pre-hook rather than output_hidden_states: the latter came back None in ddp_spawn workers
        handle = transformer_layers(self.backbone)[k].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            base(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False,
                 return_dict=True)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured[0]

    def upper_hidden(self, lower: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run only the trained top blocks (+ final norm) on a cached :meth:`lower_hidden`."""
        base, k = self._check_cacheable()
        layers = transformer_layers(self.backbone)
        attr = next(name for name, mod in base.named_children() if mod is layers)
        cfg = base.config
        layer_types = getattr(cfg, "layer_types", None)
        pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        dtype = next(layers.parameters()).dtype
        base._modules[attr] = nn.ModuleList(list(layers)[k:])  # no re-registration: same parameter objects
        if isinstance(layer_types, list):
            cfg.layer_types = layer_types[k:]  # Gemma indexes masks by a block's position in the list
        try:
            # no KV cache: Gemma would build one from the sliced layer list, which its blocks' own layer_idx
            # (positions in the full list) would index past
            out = base(inputs_embeds=lower.to(dtype), attention_mask=attention_mask, position_ids=pos,
                       use_cache=False, return_dict=True)
        finally:
            base._modules[attr] = layers
            if isinstance(layer_types, list):
                cfg.layer_types = layer_types
        return out.last_hidden_state

    def q_values(self, hidden: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q for the whole vocabulary ``[B, T, V]`` (decoding; calibrated when a calibration is attached)."""
        q = (self.target_head if target else self.head)(hidden)
        return q if self.q_transform is None else self.q_transform(q)

    def q_taken(self, hidden: torch.Tensor, actions: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q at the taken tokens ``[B, T]`` (the loss's fast path; equal to gathering ``q_values``)."""
        return (self.target_head if target else self.head).taken(hidden, actions)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, target: bool = False) -> torch.Tensor:
        hidden, _ = self.hidden_states(input_ids, attention_mask, position_ids)
        return self.q_values(hidden, target=target)

    @torch.no_grad()
    def polyak_update(self, alpha: float | None = None) -> None:
        """``target <- alpha * online + (1 - alpha) * target`` (call once per optimizer step)."""
        a = self.value_config.polyak_alpha if alpha is None else float(alpha)
        for t, o in zip(self.target_head.parameters(), self.head.parameters(), strict=True):
            t.lerp_(o.detach().to(t.dtype), a)

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | Path, card: Any = None) -> Path:
        """Write backbone (+ tokenizer) under ``backbone/``, both heads, ``value_config.json`` and the model
        card ``README.md`` (``card``: a :class:`rectify.model_card.CardInfo` or its dict: data, metrics, ...)."""
        from safetensors.torch import save_file

        from rectify.model_card import write_model_card

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory / BACKBONE_DIR)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory / BACKBONE_DIR)
        tensors = {f"head.{k}": v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        tensors |= {f"target_head.{k}": v.detach().contiguous().cpu() for k, v in self.target_head.state_dict().items()}
        save_file(tensors, str(directory / HEADS_FILE))
        (directory / VALUE_CONFIG_FILE).write_text(json.dumps(asdict(self.value_config), indent=2) + "\n")
        write_model_card(directory, self, card)
        from rectify.calibration import QCalibration

        if isinstance(self.q_transform, QCalibration):  # a loaded, calibrated Q_D saves with its map
            self.q_transform.save(directory)
        return directory

    def push_to_hub(self, repo_id: str, *, card: Any = None, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload rectify Q_D value model") -> str:
        """Save to a temporary dir (weights + model card) and upload it as a Hub model repo; returns the
        commit URL. An exported dir can be pushed as it is with :func:`rectify.hub.push_dir`."""
        import tempfile

        from rectify.hub import push_dir

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, card=card)
            return push_dir(tmp, repo_id, private=private, token=token, commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype | str | None = None,
                        device: str | torch.device | None = None, calibration: bool | str = "auto") -> ValueModel:
        """Load a directory written by :meth:`save_pretrained` (no Hydra config needed).

        ``calibration``: ``"auto"`` applies the dir's ``calibration.json`` (rectify.calibration) when there is
        one, ``True`` requires it, ``False`` gives raw Q.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path = directory / VALUE_CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{directory} is not a saved ValueModel: {VALUE_CONFIG_FILE} is missing")
        cfg = ValueConfig.from_any(json.loads(cfg_path.read_text()))
        kwargs = {"dtype": dtype} if dtype is not None else {}
        backbone = AutoModelForCausalLM.from_pretrained(directory / BACKBONE_DIR, **kwargs)
        try:
            tok = AutoTokenizer.from_pretrained(directory / BACKBONE_DIR)
        except Exception:  # noqa: BLE001 - a backbone saved without its tokenizer
            tok = None
        if tok is not None and tok.pad_token is None:
            tok.pad_token = tok.eos_token
        from dataclasses import replace

        # saved weights replace any init (and frozen rows need no LM init to be restored)
        model = cls(backbone, replace(cfg, init_from_lm_head=False, freeze_output_rows=False), tok)
        model.value_config = cfg
        model._freeze_output_rows()
        state = load_file(str(directory / HEADS_FILE))
        model.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
        model.target_head.load_state_dict(
            {k[12:]: v for k, v in state.items() if k.startswith("target_head.")})
        if calibration not in ("auto", True, False):
            raise ValueError(f"calibration must be 'auto', true or false, got {calibration!r}")
        if calibration:
            from rectify.calibration import CALIBRATION_FILE, QCalibration

            model.q_transform = QCalibration.load(directory)
            if model.q_transform is None and calibration is True:
                raise FileNotFoundError(f"{directory} has no {CALIBRATION_FILE}: fit one with "
                                        f"`python scripts/calibrate.py value_model_path={directory}`, or pass "
                                        "decoding.calibration=false for raw Q")
        if device is not None:
            model.to(device)
        return model.eval()
