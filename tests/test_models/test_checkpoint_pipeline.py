"""The checkpoint pipeline (nat_mm/models/checkpoint/) is walked once per load: whatever the
layout (official .pth, MMEngine-wrapped, Transformers Hub folder or safetensors file), for the
backbone and for the whole classifier, each stage module is entered once, in order (read ->
names -> checks, from the loader), and no function of the package runs twice.

The walk is recorded with ``sys.setprofile``: every call of a function defined in the
package, with the module it was called from."""
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import nat_mm.models.checkpoint as pipeline
from nat_mm import NAT
from nat_mm.models.checkpoint import load_pretrained, nat_arguments
from nat_mm.models.checkpoint.classifier import load_classifier

HF_DATA = Path(__file__).resolve().parents[1] / 'data' / 'hf'
PACKAGE_DIR = Path(pipeline.__file__).parent
#: The golden Hub folder (Transformers' NatForImageClassification) the other layouts come from.
FOLDER = 'nat_k7'
#: The stages in the order a loader enters them.
STAGES = ['read', 'names', 'checks']
#: Functions a load calls more than once, and how often: the log line summarises three key
#: lists (dropped, missing, unexpected).
PER_ITEM = {'summarize_keys': 3}


class Walk:
    """The calls of the package's functions while it is active: ``calls`` counts
    'module.function' (comprehensions and generator expressions left out), ``entries``
    lists the modules entered from another module, in order."""

    def __init__(self):
        self.calls, self.entries = Counter(), []

    def _profile(self, frame, event, arg):
        if event != 'call':
            return
        path = Path(frame.f_code.co_filename)
        if path.parent != PACKAGE_DIR or frame.f_code.co_name.startswith('<'):
            return
        module = path.stem
        self.calls[f'{module}.{frame.f_code.co_name}'] += 1
        caller = Path(frame.f_back.f_code.co_filename) if frame.f_back else None
        if caller != path:
            self.entries.append(module)

    def __enter__(self):
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)


def hub_arguments():
    return nat_arguments(json.loads((HF_DATA / FOLDER / 'config.json').read_text()))


class Classifier(nn.Module):
    """What the classifier loader needs of MMPretrain's ImageClassifier + LinearClsHead."""

    def __init__(self):
        super().__init__()
        self.backbone = NAT(out_indices=(3, ), **hub_arguments())
        self.head = nn.Module()
        self.head.fc = nn.Linear(8 * self.backbone.arch_settings['embed_dim'], 10)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """layout -> path: the golden classifier's weights as the official .pth (backbone, norm.*,
    head.*), an MMEngine checkpoint of the classifier ({'state_dict': {'module.backbone.*',
    'module.head.fc.*'}, 'meta'}), the Hub folder, its safetensors file, and its Transformers
    names under an MMEngine wrapper's 'backbone.' (no config.json)."""
    root = tmp_path_factory.mktemp('layouts')
    classifier = Classifier()
    load_classifier(classifier, HF_DATA / FOLDER)
    state = classifier.state_dict()
    official = {key[len('backbone.'):]: value for key, value in state.items()
                if key.startswith('backbone.') and not key.startswith('backbone.norm3.')}
    for name in ('weight', 'bias'):
        official[f'norm.{name}'] = state[f'backbone.norm3.{name}']
        official[f'head.{name}'] = state[f'head.fc.{name}']
    torch.save(official, root / 'nat_official.pth')
    torch.save({'state_dict': {f'module.{key}': value for key, value in state.items()},
                'meta': {'epoch': 1}}, root / 'epoch_1.pth')
    hub_state = load_file(HF_DATA / FOLDER / 'model.safetensors')
    torch.save({'state_dict': {f'backbone.{key}': value for key, value in hub_state.items()}},
               root / 'wrapped_hub.pth')
    return {'official': root / 'nat_official.pth', 'mmengine': root / 'epoch_1.pth',
            'hub_folder': HF_DATA / FOLDER,
            'hub_safetensors': HF_DATA / FOLDER / 'model.safetensors',
            'mmengine_hub': root / 'wrapped_hub.pth'}


LAYOUTS = ['official', 'mmengine', 'hub_folder', 'hub_safetensors', 'mmengine_hub']


def assert_walked_once(walk, loader_module, check_stage, layout):
    """Each stage entered once, in order, from the loader; each function at most once
    (:data:`PER_ITEM` excepted); the stage functions exactly once."""
    stages = [module for module in walk.entries if module != 'messages']
    assert stages == [loader_module] + STAGES, walk.entries
    assert {name for name in walk.calls if name.startswith('messages.')} <= {
        'messages.summarize_keys'}, walk.calls
    repeated = {name: count for name, count in walk.calls.items()
                if count > PER_ITEM.get(name.split('.')[1], 1)}
    assert not repeated, repeated
    stage_functions = ['read.read_checkpoint', 'read.sniff_format', 'names.to_nat_names',
                       'names.unwrap_state_dict', 'names.detect_layout', check_stage,
                       'checks.fit_to_model', 'checks.check_state_dict']
    transformers, config = 'hub' in layout, layout.startswith('hub')
    stage_functions += ['names.from_transformers_layout'] if transformers else []
    stage_functions += ['read._read_config', 'checks.check_config'] if config else []
    assert {name: walk.calls[name] for name in stage_functions} == dict.fromkeys(stage_functions, 1)
    assert ('names.from_transformers_layout' in walk.calls) == transformers
    assert ('checks.check_config' in walk.calls) == config


@pytest.mark.parametrize('layout', LAYOUTS)
def test_backbone_load_walks_the_pipeline_once(checkpoints, layout):
    model = NAT(**hub_arguments())
    with Walk() as walk:
        loaded, _, _ = load_pretrained(model, checkpoints[layout])
    layers = {key for key in model.state_dict() if not key.startswith('norm')}
    assert layers <= set(loaded) <= set(model.state_dict())  # the output norms may be absent
    assert walk.calls['load.load_pretrained'] == walk.calls['load.prepare_state_dict'] == 1
    assert_walked_once(walk, 'load', 'checks.check_backbone', layout)
    assert walk.calls['messages.summarize_keys'] == 3


@pytest.mark.parametrize('layout', LAYOUTS)
def test_classifier_load_walks_the_pipeline_once(checkpoints, layout):
    model = Classifier()
    with Walk() as walk:
        state_dict, _ = load_classifier(model, checkpoints[layout])
    assert len(state_dict) == len(model.state_dict())
    assert walk.calls['classifier.load_classifier'] == 1
    assert walk.calls['classifier.classifier_state_dict'] == 1
    assert_walked_once(walk, 'classifier', 'checks.check_classifier', layout)
    assert walk.calls['checks._check_head'] == 1
    assert 'messages.summarize_keys' not in walk.calls


def test_rpb_tables_of_another_kernel_are_resized_in_the_same_single_walk(checkpoints):
    """The one function that runs per item besides the log line's: resize_rpb, once per
    table of another kernel size."""
    model = NAT(**dict(hub_arguments(), kernel_size=5))
    with Walk() as walk:
        load_pretrained(model, checkpoints['official'])
    tables = [key for key in model.state_dict() if key.endswith('attn.rpb')]
    assert walk.calls['checks.resize_rpb'] == len(tables) > 1
    del walk.calls['checks.resize_rpb']
    assert_walked_once(walk, 'load', 'checks.check_backbone', 'official')


def test_the_walk_recorder_sees_a_repeat():
    """The recorder itself: a function that runs twice is counted twice, and a module
    entered twice is listed twice."""
    state = {'patch_embed.norm.weight': torch.ones(2)}
    with Walk() as walk:
        pipeline.to_nat_names(state)
        pipeline.to_nat_names(state)
    assert walk.calls['names.to_nat_names'] == walk.calls['names.unwrap_state_dict'] == 2
    assert walk.entries == ['names', 'names']
