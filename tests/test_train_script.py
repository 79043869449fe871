"""The real Hydra configs, composed and run: smoke runs of both experiments, export, resume, multirun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rectify.training.run import logger_cfg, train
from rectify.value_model import ValueModel

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])
    return cfg


def test_paper_experiment_hyperparameters(tmp_path):
    cfg = cfg_for(tmp_path, "+experiment=gpt2")
    m = cfg.model
    assert m.backbone.name_or_path == "gpt2" and m.backbone.random_init is None
    assert (m.gamma, m.q_min, m.q_max, m.polyak_alpha) == (1.0, -1.0, 0.0, 0.1)
    assert not m.freeze_backbone and m.td.mode == "td0" and m.hidden_mult == 2
    assert (m.optimizer.lr, m.scheduler.name, m.scheduler.warmup_steps) == (3e-4, "linear", 500)
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 3
    assert "wandb" in cfg.logger


def test_smoke_keeps_experiment_and_family(tmp_path):
    for exp, family in (("gpt2", "gpt2"), ("smollm2", "llama")):
        cfg = cfg_for(tmp_path, f"+experiment={exp}", "debug=smoke")
        assert cfg.model.backbone.family == family and cfg.model.backbone.random_init.num_layers == 2
        assert cfg.synthetic_data.enabled and logger_cfg(cfg) is None and cfg.trainer.max_steps == 3
        OmegaConf.resolve(cfg)  # every interpolation resolves


@pytest.mark.parametrize("exp", [pytest.param("gpt2", marks=pytest.mark.slow), "smollm2"])
def test_smoke_run_exports_loadable_model(tmp_path, exp, capsys):
    cfg = cfg_for(tmp_path, f"+experiment={exp}", "debug=smoke", "model.gamma=0.9")
    metrics = train(cfg)
    assert "val/loss" in metrics and "val/auc_min_q" in metrics
    export = tmp_path / "value_model"
    assert f"value model exported to {export}" in capsys.readouterr().out
    vm = ValueModel.from_pretrained(export)
    assert vm.value_config.gamma == 0.9
    ids = vm.tokenizer(["a test"], return_tensors="pt")
    with torch.no_grad():
        q = vm(ids["input_ids"], ids["attention_mask"])
    assert q.shape[-1] == len(vm.tokenizer) and torch.isfinite(q).all()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_resume_from_checkpoint(tmp_path):
    first = cfg_for(tmp_path / "a", "+experiment=smollm2", "debug=smoke", "trainer.max_steps=1", "export=false")
    train(first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 1
    second = cfg_for(tmp_path / "b", "+experiment=smollm2", "debug=smoke", "trainer.max_steps=2",
                     f"ckpt_path={last}", "export=false")
    train(second)
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2 and int(state["state_dict"]["polyak_updates"]) == 2


def test_resuming_a_finished_checkpoint_says_so_and_validates(tmp_path, caplog):
    """A checkpoint already at max_steps: Lightning restores it and trains nothing. The run says so, and the
    export's metrics (card, the sweeper's return value) come from validating the checkpoint, not from nothing."""
    first = cfg_for(tmp_path / "a", "+experiment=smollm2", "debug=smoke", "trainer.max_steps=1", "export=false")
    train(first)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    again = cfg_for(tmp_path / "b", "+experiment=smollm2", "debug=smoke", "trainer.max_steps=1", f"ckpt_path={last}")
    with caplog.at_level("WARNING", logger="rectify.training.run"):
        metrics = train(again)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("nothing was trained" in m and "last.ckpt" in m and "max_steps=1" in m for m in warned), warned
    assert "val/loss" in metrics and "val/auc_min_q" in metrics
    assert (tmp_path / "b" / "value_model").is_dir()


def test_progress_bar_off_drops_the_progress_bar_callback(tmp_path):
    """trainer.enable_progress_bar=false (no +) trains: Lightning refuses it beside a TQDMProgressBar callback."""
    from lightning.pytorch.callbacks import ProgressBar

    from rectify.training.run import build_callbacks

    cfg = cfg_for(tmp_path, "+experiment=smollm2", "debug=smoke", "trainer.enable_progress_bar=false", "export=false")
    assert not any(isinstance(c, ProgressBar) for c in build_callbacks(cfg, with_logger=False))
    assert any(isinstance(c, ProgressBar) for c in build_callbacks(cfg_for(tmp_path, "debug=smoke"), False))
    assert "val/loss" in train(cfg)


def test_smoke_drops_configured_loggers_but_not_a_command_line_one(tmp_path, under_hydra):
    """debug=smoke turns off the logger group's default and an experiment's (gpt2's wandb); a logger= given on
    the command line is still built, as any override wins over a config group."""
    from rectify.training.run import build_loggers

    assert logger_cfg(under_hydra("debug=smoke")) is None
    assert logger_cfg(under_hydra("+experiment=gpt2", "debug=smoke")) is None
    assert "csv" in logger_cfg(under_hydra("logger=csv"))
    built = build_loggers(logger_cfg(under_hydra("debug=smoke", "logger=csv")))
    assert [type(lg).__name__ for lg in built] == ["CSVLogger"]
    tb = logger_cfg(under_hydra("+experiment=gpt2", "debug=smoke", "logger=tensorboard"))
    assert list(tb) == ["tensorboard"]


def _script(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PROJECT_ROOT": str(cwd)}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("exp", ["gpt2", "smollm2"])
def test_script_smoke_subprocess(tmp_path, exp):
    res = _script(f"+experiment={exp}", "debug=smoke", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "value model exported to" in res.stdout


@pytest.mark.slow
def test_multirun_over_gamma(tmp_path):
    res = _script("-m", "+experiment=smollm2", "debug=smoke", "model.gamma=0.9,1.0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    exports = sorted(tmp_path.glob("outputs/train_smollm2/multiruns/*/*/value_model/value_config.json"))
    assert len(exports) == 2
    gammas = sorted(ValueModel.from_pretrained(p.parent).value_config.gamma for p in exports)
    assert gammas == [0.9, 1.0]


@pytest.mark.parametrize("name, expected", [("csv", "CSVLogger"), ("wandb", "WandbLogger"), ("none", None)])
def test_logger_configs_build(tmp_path, monkeypatch, name, expected):
    from rectify.training.run import build_loggers

    monkeypatch.setenv("WANDB_MODE", "disabled")  # WANDB_MODE wins over the config's offline default
    cfg = cfg_for(tmp_path, f"logger={name}")
    loggers = build_loggers(cfg.logger)
    assert [type(lg).__name__ for lg in loggers] == ([expected] if expected else [])
    if name == "wandb":
        assert OmegaConf.select(cfg, "logger.wandb.mode") == "offline"


def _offline_wandb(monkeypatch, tmp_path) -> None:
    """wandb offline, with its settings, cache and staging folders inside the test's tmp dir."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))


def test_jobs_in_one_process_get_their_own_wandb_runs(tmp_path, monkeypatch):
    """A multirun on Hydra's basic launcher runs its jobs in one process: each job must finish its wandb run, or
    the next job's WandbLogger reuses the live ``wandb.run`` and both jobs land in job 0's run."""
    import wandb

    import rectify.training.run as run_mod

    _offline_wandb(monkeypatch, tmp_path)
    built: list = []
    build_loggers = run_mod.build_loggers

    def keep_loggers(c):  # the job's WandbLogger, to read its run afterwards
        built.extend(build_loggers(c))
        return built[-1:]

    monkeypatch.setattr(run_mod, "build_loggers", keep_loggers)
    wandb_node = OmegaConf.load(ROOT / "configs" / "logger" / "wandb.yaml")
    runs = {}
    try:
        for job, lr in (("0", 1e-4), ("1", 3e-4)):
            cfg = cfg_for(tmp_path / job, "+experiment=smollm2", "debug=smoke", "trainer.max_steps=1",
                          "export=false", f"model.optimizer.lr={lr}")
            cfg.logger = wandb_node
            cfg.loggers_enabled = True  # debug=smoke turns configured loggers off
            train(cfg)
            assert wandb.run is None, "the job left its wandb run open"
            run = built[-1].experiment
            assert [p.name for p in (tmp_path / job / "wandb").glob("offline-run-*")] == [Path(run.dir).parent.name]
            runs[run.id] = run.config["model_cfg"]["optimizer"]["lr"]
    finally:
        wandb.finish()  # never leak a run into other tests
    assert len(runs) == 2 and sorted(runs.values()) == [1e-4, 3e-4]


def test_a_failed_job_finishes_its_wandb_run(tmp_path, monkeypatch):
    """A job that raises must not leave its run open either: the multirun's next job would log into it."""
    import wandb

    import rectify.training.run as run_mod

    _offline_wandb(monkeypatch, tmp_path)

    class Failing:
        def __init__(self, logger):
            self.logger = logger

        def fit(self, *args, **kwargs):
            assert self.logger[0].experiment is not None  # the WandbLogger starts its run, as Trainer.fit does
            raise RuntimeError("job failed")

    monkeypatch.setattr(run_mod, "build_trainer", lambda trainer_cfg, callbacks, logger: Failing(logger))
    cfg = cfg_for(tmp_path, "+experiment=smollm2", "debug=smoke", "export=false")
    cfg.logger = OmegaConf.load(ROOT / "configs" / "logger" / "wandb.yaml")
    cfg.loggers_enabled = True  # debug=smoke turns configured loggers off
    try:
        with pytest.raises(RuntimeError, match="job failed"):
            train(cfg)
        assert wandb.run is None
    finally:
        wandb.finish()
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


@pytest.fixture()
def under_hydra(tmp_path):
    """Compose train as `scripts/train.py OVERRIDES` would (HydraConfig set: the command line is known)."""
    from hydra.core.hydra_config import HydraConfig

    def make(*overrides):
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_smoke_keeps_data_paths_given_on_the_command_line(tmp_path, under_hydra, caplog):
    """debug=smoke trains on generated data instead of the experiment's files, saying so and naming them; data
    paths on the command line win over that (as any override wins over a config group) unless the command line
    also asks for synthetic_data.enabled=true."""
    import json

    from rectify.training.module import ValueLightningModule
    from rectify.training.run import build_datamodule
    from rectify.training.synthetic import synthetic_lines

    own = []
    for name in ("train", "val"):
        own.append(tmp_path / f"{name}.json")
        own[-1].write_text("".join(json.dumps(r) + "\n" for r in synthetic_lines(8, seed=3)))
    smoke = ["+experiment=gpt2", "debug=smoke"]
    mine = [f"data.train_path={own[0]}", f"data.val_path={own[1]}"]
    synthetic = str(tmp_path / "synthetic_data")

    cfg = under_hydra(*smoke, *mine)
    module = ValueLightningModule(cfg.model)
    dm = build_datamodule(cfg, module)
    assert (dm.train_path, dm.val_path) == (str(own[0]), str(own[1]))
    assert not (tmp_path / "synthetic_data").exists()
    assert "training on the data given on the command line" in caplog.text

    caplog.clear()
    dm = build_datamodule(under_hydra(*smoke), module)
    assert dm.train_path.startswith(synthetic)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("data.train_path=" in m and "paper/train.json" in m and "synthetic_data.enabled=false" in m
               for m in warned), warned

    dm = build_datamodule(under_hydra(*smoke, *mine, "synthetic_data.enabled=true"), module)
    assert dm.train_path.startswith(synthetic)


def _leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


@pytest.mark.parametrize("exp", sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")
                                       if not p.stem.startswith("demo_")))
def test_smoke_sets_only_keys_no_experiment_overrides(tmp_path, exp):
    """configs/train.yaml: +experiment=NAME comes after debug=smoke, so smoke's train keys must be ones no
    experiment sets; each of them keeps smoke's value (loggers_enabled false included, over gpt2's wandb)."""
    smoke = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "debug" / "smoke.yaml"))
    cfg = OmegaConf.to_container(cfg_for(tmp_path, f"+experiment={exp}", "debug=smoke"))
    for key, value in _leaves({k: smoke[k] for k in ("model", "synthetic_data", "trainer", "loggers_enabled")}):
        got = cfg
        for part in key.split("."):
            got = got[part] if got is not None else None
        assert got == value, f"+experiment={exp} sets {key}={got!r} over debug=smoke's {value!r}"


def test_missing_value_data_fails_before_any_model_loads(tmp_path, monkeypatch):
    """+experiment=gpt2 without its data: the error names the file at once (offline, loading the gpt2 backbone
    from the Hub first had spent half a minute on retries)."""
    import rectify.training.run as run
    from rectify.training.data import MissingValueData

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the data was checked")

    monkeypatch.setattr(run, "ValueLightningModule", no_model)
    cfg = cfg_for(tmp_path, "+experiment=gpt2", f"data.train_path={tmp_path / 'none.json'}")
    with pytest.raises(MissingValueData, match="none.json does not exist"):
        train(cfg)


def test_the_card_records_command_line_data_over_smokes_synthetic_data(tmp_path, under_hydra):
    """debug=smoke with data paths on the command line trains on them; the export's card must say so too (its
    config had kept smoke's synthetic_data.enabled: true)."""
    from rectify.training.synthetic import write_synthetic

    train_path, val_path = write_synthetic(tmp_path / "mine", 32, 16, tokenizer=None)
    cfg = under_hydra("+experiment=smollm2", "debug=smoke", f"data.train_path={train_path}",
                      f"data.val_path={val_path}")
    train(cfg)
    card = (tmp_path / "value_model" / "README.md").read_text()
    assert f"- train: `{train_path}`" in card
    assert "synthetic_data:\n  enabled: false" in card


def test_trainer_gpu_without_a_gpu_is_a_config_error(tmp_path, monkeypatch):
    """trainer=gpu on a machine with no CUDA: one line naming the fix (Lightning said "No supported gpu backend")."""
    from rectify.errors import ConfigError
    from rectify.training.run import build_trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for group in ("gpu", "ddp"):
        cfg = cfg_for(tmp_path, "debug=smoke", f"trainer={group}")
        with pytest.raises(ConfigError, match="no CUDA GPU is visible .* use trainer=cpu"):
            build_trainer(cfg.trainer)

    import rectify.training.run as run_mod

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the accelerator was checked")

    monkeypatch.setattr(run_mod, "ValueLightningModule", no_model)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        train(cfg_for(tmp_path, "debug=smoke", "trainer=gpu"))
