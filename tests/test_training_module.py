"""LightningModule: Polyak timing under gradient accumulation, checkpoint contents, resume, optimizer groups."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from rectify.training.data import ValueDataModule
from rectify.training.module import ValueLightningModule, split_model_config
from rectify.training.synthetic import write_synthetic


def model_cfg(**over):
    cfg = {
        "backbone": {"source": "hub", "name_or_path": "tiny", "family": "gpt2",
                     "random_init": {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "seed": 0}},
        "polyak_alpha": 0.5, "gamma": 1.0,
        "optimizer": {"lr": 1e-3, "weight_decay": 0.01},
        "scheduler": {"name": "linear", "warmup_steps": 1},
    }
    cfg.update(over)
    return cfg


def _fit(module, tmp_path, max_steps, accumulate=1, ckpt_path=None, callbacks=()):
    tok = module.tokenizer
    train, val = write_synthetic(tmp_path / "data", 16, 8, tokenizer=tok)
    dm = ValueDataModule(tok, str(train), str(val), batch_size=4, shuffle=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, accumulate_grad_batches=accumulate,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=1, num_sanity_val_steps=0,
                        gradient_clip_val=1.0, default_root_dir=tmp_path, callbacks=list(callbacks))
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


class PolyakSpy(L.Callback):
    """Checks the target head after every optimizer step: exactly one Polyak update per real step."""

    def __init__(self):
        self.seen = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before = [p.detach().clone() for p in pl_module.model.target_head.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not hasattr(self, "before"):
            return  # an accumulation micro-step: no optimizer step has happened yet
        a = pl_module.model.value_config.polyak_alpha
        online = list(pl_module.model.head.parameters())
        for t, o, b in zip(pl_module.model.target_head.parameters(), online, self.before, strict=True):
            torch.testing.assert_close(t, a * o.detach() + (1 - a) * b, atol=1e-6, rtol=1e-5)
        self.seen.append(batch_idx)
        del self.before


def test_polyak_once_per_optimizer_step_under_accumulation(tmp_path):
    module = ValueLightningModule(model_cfg())
    spy = PolyakSpy()
    trainer = _fit(module, tmp_path, max_steps=2, accumulate=2, callbacks=[spy])
    assert trainer.global_step == 2
    assert int(module.polyak_updates) == 2  # 4 micro-batches, 2 optimizer steps
    assert spy.seen == [1, 3]
    # the target moved away from its initial copy but is not the online head
    diff = [(t - o).abs().max() for t, o in zip(module.model.target_head.parameters(), module.model.head.parameters(), strict=True)]
    assert max(diff) > 0


def test_resume_continues_step_optimizer_and_target(tmp_path):
    module = ValueLightningModule(model_cfg())
    trainer = _fit(module, tmp_path, max_steps=2)
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert any(k.startswith("model.target_head.") for k in state["state_dict"])
    target_after_2 = {k: v.clone() for k, v in module.model.target_head.state_dict().items()}

    fresh = ValueLightningModule(model_cfg())
    seen = {}

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["step"] = trainer.global_step
            seen["target"] = {k: v.clone() for k, v in pl_module.model.target_head.state_dict().items()}
            seen["adam_steps"] = [float(s["step"]) for s in trainer.optimizers[0].state.values()]

    trainer2 = _fit(fresh, tmp_path, max_steps=4, ckpt_path=ckpt, callbacks=[Probe()])
    assert seen["step"] == 2 and trainer2.global_step == 4
    for k, v in target_after_2.items():
        torch.testing.assert_close(seen["target"][k], v)
    assert seen["adam_steps"] and all(float(s) == 2 for s in seen["adam_steps"])
    assert int(fresh.polyak_updates) == 4


def test_checkpoints_keep_only_what_training_changes(tmp_path):
    """Frozen weights (and the target head's copies of frozen head weights) are left out of checkpoints and put
    back on resume from the config; a config that builds other frozen weights is refused."""
    cfg = model_cfg(freeze_backbone=True, train_top_layers=1)
    module = ValueLightningModule(cfg)
    trainer = _fit(module, tmp_path / "a", max_steps=2)
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    fixed = module.fixed_weight_names()
    trained = [n for n, p in module.named_parameters() if p.requires_grad]
    assert fixed and trained and not set(fixed) & set(saved) and set(trained) <= set(saved)
    assert "model.backbone.transformer.wte.weight" in fixed                      # a frozen embedding
    assert any(k.startswith("model.target_head.") for k in saved)                # Polyak-updated: kept
    for name in (n for n in fixed if n.startswith("model.target_head.")):
        assert name.replace("model.target_head.", "model.head.", 1) in fixed     # only copies of frozen ones

    fresh = ValueLightningModule(cfg)
    _fit(fresh, tmp_path / "b", max_steps=2, ckpt_path=ckpt)                    # restores, nothing left to train
    want = module.state_dict()
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0)

    other = model_cfg(freeze_backbone=True, train_top_layers=1)
    other["backbone"] = other["backbone"] | {"random_init": other["backbone"]["random_init"] | {"seed": 1}}
    with pytest.raises(ValueError, match="other frozen weights"):
        _fit(ValueLightningModule(other), tmp_path / "c", max_steps=2, ckpt_path=ckpt)


def test_resume_with_a_frozen_head_holding_negative_zeros(tmp_path):
    """The recipe's head (output rows = the LM's embeddings, frozen) has -0.0 where an embedding is 0; Polyak
    averaging turns the target copy's -0.0 into +0.0. Same values: the resume must accept it and restore them."""
    from rectify.lm import load_lm
    from rectify.value_model import ValueModel

    # polyak_alpha < 0.5: torch.lerp computes start + w (end - start), and -0.0 + 0.0 = +0.0
    cfg = model_cfg(freeze_backbone=True, train_top_layers=1, init_from_lm_head=True, freeze_output_rows=True,
                    polyak_alpha=0.1)

    def build() -> ValueLightningModule:
        lm, tok = load_lm(cfg["backbone"])
        with torch.no_grad():
            lm.get_output_embeddings().weight[:, :4] = 0.0   # exact zeros, as real embeddings have
        return ValueLightningModule(cfg, model=ValueModel.from_backbone(lm, split_model_config(cfg)[1], tok))

    module = build()
    out = module.model.head.out.weight
    assert bool(((out == 0) & torch.signbit(out)).any())            # the case: negative zeros in a fixed weight
    trainer = _fit(module, tmp_path / "a", max_steps=2)
    assert "model.target_head.out.weight" in module.fixed_weight_names()
    target = module.model.target_head.out.weight
    assert torch.equal(target, out) and not bool(((target == 0) & torch.signbit(target)).any())   # bits moved
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt)
    fresh = build()
    _fit(fresh, tmp_path / "b", max_steps=2, ckpt_path=ckpt)
    want = module.state_dict()
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, want[k]), k                               # equal values (zeros of either sign)


def test_weight_decay_groups_and_frozen_params():
    module = ValueLightningModule(model_cfg(freeze_backbone=True, train_top_layers=0))

    class T:
        estimated_stepping_batches = 10

    module._trainer = None
    module.trainer = T()  # type: ignore[assignment]
    opt = module.configure_optimizers()["optimizer"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert ids == {id(p) for p in module.model.head.parameters()}  # only the trainable head
    assert all(p.ndim < 2 for p in no_decay["params"]) and all(p.ndim == 2 for p in decay["params"])


def test_unknown_model_key_is_an_error():
    with pytest.raises(ValueError, match="unknown model config keys"):
        split_model_config(model_cfg(gama=0.9))


def test_frozen_layer_cache_matches_uncached_training(tmp_path):
    llama = {"source": "hub", "name_or_path": "tiny", "family": "llama",
             "random_init": {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "seed": 0}}
    heads = []
    for cache in (False, True):
        torch.manual_seed(0)
        module = ValueLightningModule(model_cfg(backbone=llama, train_top_layers=1, cache_frozen_layers=cache))
        trainer = _fit(module, tmp_path / str(cache), max_steps=2)
        assert ("lower" in trainer.datamodule.train_set[0]) == cache  # the cached path really ran
        heads.append([p.detach().clone() for p in module.model.parameters()])
    assert len(heads[0]) == len(heads[1])
    for a, b in zip(heads[0], heads[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["td0", "mc"])
def test_learns_to_separate_synthetic_dead_ends(tmp_path, mode):
    """A can-fail learning check: on the generated data (insult words = dead end) the val AUC of min_t Q rises."""
    torch.manual_seed(0)
    module = ValueLightningModule(model_cfg(td={"mode": mode}, optimizer={"lr": 3e-3},
                                            scheduler={"name": "none", "warmup_steps": 0}))
    tok = module.tokenizer
    train, val = write_synthetic(tmp_path / "data", 64, 32, tokenizer=tok)
    dm = ValueDataModule(tok, str(train), str(val), batch_size=16)
    trainer = L.Trainer(accelerator="cpu", max_epochs=6, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.callback_metrics["val/auc_min_q"] >= 0.9
    assert trainer.callback_metrics["val/q_toxic"] < trainer.callback_metrics["val/q_clean"]


def test_frozen_layer_cache_in_bf16(tmp_path):
    """cache_dtype=bfloat16 halves the cache; training reads it in the blocks' own dtype."""
    llama = {"source": "hub", "name_or_path": "tiny", "family": "llama",
             "random_init": {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "seed": 0}}
    module = ValueLightningModule(model_cfg(backbone=llama, train_top_layers=1, cache_frozen_layers=True,
                                            cache_dtype="bfloat16"))
    trainer = _fit(module, tmp_path, max_steps=2)
    assert trainer.datamodule.train_set[0]["lower"].dtype == torch.bfloat16
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
