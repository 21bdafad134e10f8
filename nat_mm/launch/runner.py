"""The steps tools/train.py and tools/test.py share around MMEngine's Runner."""
import os.path as osp

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..utils.config import load_config


def load_run_config(config, launcher='none', cfg_options=None, work_dir=None):
    """The config of a run: :func:`nat_mm.utils.load_config` plus the launcher
    and the work dir.

    ``work_dir`` defaults to the config's own, else ``./work_dirs/<config name>``.
    """
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def build_runner(cfg):
    """MMEngine's Runner, or the config's ``runner_type``."""
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
