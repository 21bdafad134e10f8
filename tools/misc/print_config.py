"""Print a config as the Runner sees it: ``_base_`` files merged, ``_delete_`` applied,
``--cfg-options`` overrides on top.

Examples:
    python tools/misc/print_config.py configs/upernet_dinat_tiny_ade20k.py
    python tools/misc/print_config.py configs/mask_rcnn_nat_tiny_coco.py --key model.backbone
    python tools/misc/print_config.py CONFIG --cfg-options model.backbone.drop_path_rate=0.1 \
        --save-path merged.py
"""
import argparse

from mmengine.config import Config

from nat_mm.cli.options import add_config_options
from nat_mm.utils import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file')
    add_config_options(parser)
    parser.add_argument('--key', help='print only this entry, e.g. model.backbone')
    parser.add_argument('--save-path', help='also write the merged config to this .py file')
    return parser.parse_args(argv)


def select(cfg, key):
    """The entry at dotted ``key`` (list items by index: ``a.0.b``)."""
    node = cfg.to_dict()
    for depth, part in enumerate(key.split('.')):
        where = '.'.join(key.split('.')[:depth]) or 'the config'
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(f'--key {key}: {where} is a list of {len(node)} entries, '
                               f'{part!r} is not an index of it')
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                raise KeyError(f'--key {key}: {where} has no entry {part!r}; it has '
                               f'{sorted(node)}')
            node = node[part]
        else:
            raise KeyError(f'--key {key}: {where} is {node!r}, neither a dict nor a list')
    return node


def render(value):
    """A selected entry as text: a dict as config text, anything else as its repr."""
    if isinstance(value, dict):
        return Config(value).pretty_text
    return repr(value)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if args.save_path:
        cfg.dump(args.save_path)
    text = render(select(cfg, args.key)) if args.key else cfg.pretty_text
    print(text)
    return text


if __name__ == '__main__':
    main()
