"""Reading a config the way every nat_mm entry point does."""
from mmengine.config import Config


def load_config(config, cfg_options=None):
    """The config at ``config`` with ``cfg_options`` merged into it.

    Args:
        config: path of a config file, or an mmengine ``Config`` (copied: the
            caller's stays as it was).
        cfg_options (dict, optional): entries to override, as ``--cfg-options``
            gives them (``{'model.backbone.drop_path_rate': 0.1}``).

    Returns:
        mmengine.Config.
    """
    cfg = config.copy() if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg
