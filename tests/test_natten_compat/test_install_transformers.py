"""A real NATTEN client, unmodified: Hugging Face Transformers 4.44.2's NAT and DiNAT, with
install() called after Transformers was imported (``import nat_mm`` imports it), reproduce
Transformers + NATTEN 0.17.5's feature maps (tests/data/hf) and train with nat_mm's gradients."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nat_mm import NAT, natten_compat
from nat_mm.models.checkpoint import from_transformers_layout, nat_arguments

transformers = pytest.importorskip('transformers')
if transformers.__version__ != '4.44.2':
    pytest.skip(f'Transformers {transformers.__version__}: the NAT / DiNAT known to run '
                'correctly are 4.44.2\'s (docs/natten_compat.md)', allow_module_level=True)

HF_DATA = Path(__file__).resolve().parents[1] / 'data' / 'hf'
FOLDERS = ('nat_k7', 'dinat_k7', 'dinat_k11')
STAGES = ['stage1', 'stage2', 'stage3', 'stage4']


@pytest.fixture(scope='module')
def backbone_classes():
    """install() with Transformers already imported and its availability flag cached False."""
    from transformers.utils import import_utils
    assert 'transformers' in sys.modules
    was_available = import_utils.is_natten_available()
    assert natten_compat.install() is True
    assert import_utils.is_natten_available()
    yield {'nat': transformers.NatBackbone, 'dinat': transformers.DinatBackbone}
    natten_compat.uninstall()
    assert import_utils.is_natten_available() == was_available


def _hf_backbone(backbone_classes, folder, data):
    """Transformers' backbone from the Hub folder, with golden.pt's output norms, float64."""
    model = backbone_classes[folder.split('_')[0]].from_pretrained(
        HF_DATA / folder, out_features=STAGES, drop_path_rate=0.0)
    missing = model.load_state_dict(data['backbone_norms'], strict=False).missing_keys
    assert not [key for key in missing if key.startswith('hidden_states_norms')]
    return model.double()


@pytest.mark.parametrize('folder', FOLDERS)
def test_transformers_backbone_reproduces_golden_feature_maps(backbone_classes, folder):
    data = torch.load(HF_DATA / folder / 'golden.pt', weights_only=True)
    model = _hf_backbone(backbone_classes, folder, data).eval()
    with torch.no_grad():
        maps = model(data['input']).feature_maps
    assert len(maps) == len(data['feature_maps']) == 4
    for got, expected in zip(maps, data['feature_maps']):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize('folder', FOLDERS)
def test_transformers_training_step_has_nat_mm_gradients(backbone_classes, folder):
    """One training step (train mode, drop path off) of Transformers' backbone on nat_mm's
    NATTEN, against nat_mm's own NAT loaded from the same folder: every gradient equal."""
    data = torch.load(HF_DATA / folder / 'golden.pt', weights_only=True)
    hf = _hf_backbone(backbone_classes, folder, data).train()
    config = json.loads((HF_DATA / folder / 'config.json').read_text())
    ours = NAT(**nat_arguments(config),
               init_cfg=dict(type='Pretrained', checkpoint=str(HF_DATA / folder)))
    ours.init_weights()
    ours.load_state_dict(from_transformers_layout(data['backbone_norms'])[0], strict=False)
    ours = ours.double().train()
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(expected.shape, generator=gen, dtype=torch.float64)
               for expected in data['feature_maps']]

    def step(feature_maps):
        loss = sum((f * w).sum() for f, w in zip(feature_maps, weights))
        loss.backward()
        return loss

    hf_loss = step(hf(data['input']).feature_maps)
    our_loss = step(ours(data['input']))
    torch.testing.assert_close(hf_loss, our_loss, rtol=1e-9, atol=0)
    hf_grads, _ = from_transformers_layout(
        {name: p.grad for name, p in hf.named_parameters() if p.grad is not None})
    our_grads = {name: p.grad for name, p in ours.named_parameters()}
    assert sorted(hf_grads) == sorted(our_grads)
    for name, grad in our_grads.items():
        torch.testing.assert_close(hf_grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_install_after_transformers_dinat_module_was_imported():
    """In a fresh process: DiNAT's module imported while NATTEN was missing (it bound stand-ins
    that raise), then install(): the stand-ins are replaced, the golden maps come out, and
    uninstall() puts the stand-ins back."""
    script = f'''
import torch
import nat_mm
from transformers.models.dinat import modeling_dinat
from transformers.utils import import_utils
stand_in = modeling_dinat.natten2dqkrpb
assert not import_utils.is_natten_available()
from nat_mm import natten_compat
assert natten_compat.install()
assert modeling_dinat.natten2dqkrpb is natten_compat.natten2dqkrpb
folder = {str(HF_DATA / 'dinat_k7')!r}
data = torch.load(folder + '/golden.pt', weights_only=True)
model = modeling_dinat.DinatBackbone.from_pretrained(folder, out_features={STAGES!r})
model.load_state_dict(data['backbone_norms'], strict=False)
with torch.no_grad():
    maps = model.double().eval()(data['input']).feature_maps
for got, expected in zip(maps, data['feature_maps']):
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=0)
natten_compat.uninstall()
assert modeling_dinat.natten2dqkrpb is stand_in and not import_utils.is_natten_available()
print('ok')
'''
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith('ok')
