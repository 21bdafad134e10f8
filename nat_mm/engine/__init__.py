from .preflight import adapt_config_to_device, check_dataset_paths, init_distributed

__all__ = ['adapt_config_to_device', 'check_dataset_paths', 'init_distributed']
