"""``nat-mm-convert`` (nat_mm/cli/convert.py) writes the official layout from a Hugging Face Hub
snapshot (the model built from its config.json), and the written file gives Transformers +
NATTEN's numbers."""
import json
from pathlib import Path

import pytest
import torch

from nat_mm.cli import convert
from nat_mm.models.checkpoint import nat_arguments

HF_DATA = Path(__file__).resolve().parents[1] / 'data' / 'hf'


@pytest.mark.parametrize('folder', ['dinat_k7', 'dinat_k11'])
def test_hub_snapshot_converts_to_the_official_layout(tmp_path, capsys, folder,
                                                      assert_transformers_features):
    dst = tmp_path / f'{folder}.pth'
    convert.main([str(HF_DATA / folder), str(dst)])
    out = capsys.readouterr().out
    saved = torch.load(dst, weights_only=True)
    config = json.loads((HF_DATA / folder / 'config.json').read_text())
    arguments = nat_arguments(config)
    assert saved['meta'] == dict(arch=arguments['arch'], kernel_size=config['kernel_size'],
                                 source=folder)
    assert all(key.startswith(('patch_embed.', 'levels.')) for key in saved['state_dict'])
    assert 'classifier.{bias,weight}' in out and 'dinat.layernorm.{bias,weight}' in out
    assert_transformers_features(dst, folder)


def test_hub_snapshot_of_another_variant_is_refused(tmp_path):
    """--arch given: the config.json check names the disagreement; nothing is written."""
    dst = tmp_path / 'out.pth'
    with pytest.raises(SystemExit) as error:
        convert.main([str(HF_DATA / 'nat_k7'), str(dst), '--arch', 'mini'])
    assert ('does not fit the model: config.json has embed_dim=16, the model has embed_dim=64: '
            'set embed_dim=16') in str(error.value)
    assert not dst.exists()

