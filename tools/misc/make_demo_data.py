"""Write the synthetic dataset of a demo config (ADE20K or COCO layout).

The config's ``demo_data`` dict gives the generator's arguments and its
``train_dataloader.dataset.data_root`` the folder; both can be overridden.

Examples:
    python tools/misc/make_demo_data.py configs/demo/upernet_nat_demo.py      # -> data/demo_ade
    python tools/misc/make_demo_data.py configs/demo/mask_rcnn_nat_demo.py --num-train 200 \
        --out data/demo_coco_200

A complete dataset generated with the same arguments is kept as it is.
"""
import argparse

from mmengine.config import Config

from nat_mm.datasets import generate_demo_data


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Generate the synthetic data of a demo config')
    parser.add_argument('config', help='a config with a demo_data dict (configs/demo/*.py)')
    parser.add_argument('--out', help='output folder (default: the config\'s data_root)')
    parser.add_argument('--num-train', type=int)
    parser.add_argument('--num-val', type=int)
    parser.add_argument('--size', type=int, nargs=2, metavar=('HEIGHT', 'WIDTH'))
    parser.add_argument('--seed', type=int)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    root = generate_demo_data(
        Config.fromfile(args.config), args.out, num_train=args.num_train, num_val=args.num_val,
        image_size=tuple(args.size) if args.size else None, seed=args.seed)
    print(f'demo data: {root}')


if __name__ == '__main__':
    main()
