"""Hand-shaped tiny models shared by the decoding and analysis tests."""

from __future__ import annotations

import torch

from rectify.lm import load_lm
from rectify.value_model import ValueModel
from tests.conftest import tiny_lm_config


def peaky(model):
    """Sharpen a random tiny LM so its top tokens carry real mass (caps then bind)."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8)
    return model.eval()


def random_q_model(family: str, scale: float = 50.0) -> ValueModel:
    """A Q_D whose values vary strongly with token and state (bounded in [-1, 0])."""
    backbone, tok = load_lm(tiny_lm_config(family, seed=1))
    vm = ValueModel.from_backbone(backbone, {"bounded": True}, tok)
    with torch.no_grad():
        vm.head.out.weight.mul_(scale)
    return vm.eval()


def constant_q_model(family: str, q: torch.Tensor) -> ValueModel:
    """A hand-set Q_D: the same Q vector in every state."""
    backbone, tok = load_lm(tiny_lm_config(family, seed=1))
    vm = ValueModel.from_backbone(backbone, {}, tok)
    with torch.no_grad():
        vm.head.fc.weight.zero_()
        vm.head.fc.bias.zero_()
        vm.head.out.weight.zero_()
        vm.head.out.bias.copy_(q)
    return vm.eval()
