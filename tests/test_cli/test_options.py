"""The command-line options the tools share (nat_mm.cli.options)."""
import argparse
import os

import pytest
import torch

from nat_mm.cli.options import (add_config_options, add_launcher_options,
                                add_measurement_options, check_measurement_options,
                                parse_launcher_args)


def _launch_parser():
    parser = argparse.ArgumentParser()
    add_config_options(parser)
    add_launcher_options(parser)
    return parser


def test_cfg_options_become_a_dict_of_typed_values():
    args = _launch_parser().parse_args(
        ['--cfg-options', 'train_cfg.max_iters=50', 'model.backbone.dilations=[1,2]'])
    assert args.cfg_options == {'train_cfg.max_iters': 50, 'model.backbone.dilations': [1, 2]}
    assert _launch_parser().parse_args([]).cfg_options is None


@pytest.mark.parametrize('flag', ['--local-rank', '--local_rank'])
def test_local_rank_of_the_launcher_sets_the_environment(monkeypatch, flag):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    args = parse_launcher_args(_launch_parser(), ['--launcher', 'pytorch', f'{flag}=3'])
    assert (args.launcher, args.local_rank) == ('pytorch', 3)
    assert os.environ['LOCAL_RANK'] == '3'


def test_a_launcher_set_local_rank_wins(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '1')
    parse_launcher_args(_launch_parser(), ['--local-rank', '0'])
    assert os.environ['LOCAL_RANK'] == '1'


def test_unknown_launcher_is_refused(capsys):
    with pytest.raises(SystemExit):
        _launch_parser().parse_args(['--launcher', 'mpi'])
    assert "invalid choice: 'mpi'" in capsys.readouterr().err


def _measurement_parser():
    parser = argparse.ArgumentParser()
    add_measurement_options(parser, repeats=4)
    return parser


def test_measurement_defaults():
    args = _measurement_parser().parse_args([])
    assert (args.device, args.dtype, args.repeats, args.memory_in_process) == (
        'cpu', 'float32', 4, False)


def test_measurement_checks(capsys):
    parser = _measurement_parser()
    with pytest.raises(SystemExit):
        check_measurement_options(parser, parser.parse_args(['--repeats', '0']))
    assert '--repeats must be >= 1' in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            check_measurement_options(parser, parser.parse_args(['--device', 'cuda']))
        assert '--device cuda: CUDA is not available' in capsys.readouterr().err
