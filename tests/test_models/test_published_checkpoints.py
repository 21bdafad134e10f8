"""The weights table (PUBLISHED_CHECKPOINTS): every entry resolves to a model, a file name and
the configs that name it, and the table of docs/checkpoints.md is the one generated from it."""
import re
from pathlib import Path

import pytest

from nat_mm import NAT
from nat_mm.models import presets

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def weights_table(load_dev_script):
    """dev/weights_table.py, which writes the table of docs/checkpoints.md."""
    return load_dev_script('weights_table')


def test_docs_table_is_the_generated_one(weights_table):
    readme = (REPO_ROOT / 'docs' / 'checkpoints.md').read_text()
    begin, end = weights_table.BEGIN, weights_table.END
    assert readme.count(begin) == 1 and readme.count(end) == 1
    section = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert section == weights_table.weights_table_markdown(), (
        'docs/checkpoints.md: replace the published-weights section: '
        'python dev/weights_table.py --write docs/checkpoints.md')


def test_table_has_a_row_per_checkpoint_and_no_links_out_of_itself(weights_table):
    table = weights_table.weights_table_markdown()
    rows = [line for line in table.splitlines() if line.startswith('| `')]
    assert [row.split('`')[1] for row in rows] == list(presets.PUBLISHED_CHECKPOINTS)
    assert not re.search(r'\]\(#', table)  # self-contained: it can move into docs/


def test_the_dev_script_writes_the_section_in_place(weights_table, tmp_path):
    document = tmp_path / 'checkpoints.md'
    document.write_text(f'# Title\n{weights_table.BEGIN}old table\n{weights_table.END}after\n')
    weights_table.main(['--write', str(document)])
    assert document.read_text() == (f'# Title\n{weights_table.BEGIN}'
                                    f'{weights_table.weights_table_markdown()}'
                                    f'{weights_table.END}after\n')


#: Facts from the official repository (classification/nat.py, dinat.py) and NAT_ZOO.md.
OFFICIAL_FILES = {
    'nat_mini': ('mini', 7, None), 'nat_tiny': ('tiny', 7, None),
    'nat_small': ('small', 7, None), 'nat_base': ('base', 7, None),
    'dinat_mini_in1k_224': ('mini', 7, '224'), 'dinat_tiny_in1k_224': ('tiny', 7, '224'),
    'dinat_small_in1k_224': ('small', 7, '224'), 'dinat_base_in1k_224': ('base', 7, '224'),
    'dinat_large_in22k_224': ('large', 7, '224'),
    'dinat_large_in22k_224_11x11interp': ('large', 11, '224'),
    'dinat_large_in22k_in1k_224': ('large', 7, '224'),
    'dinat_large_in22k_in1k_384': ('large', 7, '384'),
    'dinat_large_in22k_in1k_384_11x11': ('large', 11, '224'),
}


def test_every_published_checkpoint_is_listed_with_its_settings():
    assert sorted(presets.PUBLISHED_CHECKPOINTS) == sorted(OFFICIAL_FILES)
    for name, entry in presets.PUBLISHED_CHECKPOINTS.items():
        assert (entry['arch'], entry['kernel_size'], entry['dilations']) == OFFICIAL_FILES[name]
        assert entry['file'] == f'{name}.pth' == entry['url'].rsplit('/', 1)[1]
        assert re.fullmatch(r'https://shi-labs\.com/projects/(nat/checkpoints/CLS|dinat/'
                            r'checkpoints/imagenet(1|22)k)/\w+\.pth', entry['url']), name
        assert ('in22k' in name) == entry['dataset'].startswith('ImageNet-22k')
        assert entry['resolution'] == (384 if '384' in name else 224)
        if entry['hub_repo']:
            assert re.fullmatch(r'shi-labs/(nat|dinat)-[\w-]+', entry['hub_repo'])
            assert entry['hub_file'] == 'pytorch_model.bin'
            assert re.fullmatch(r'\d+ MB', entry['hub_size'])
    assert [name for name, entry in presets.PUBLISHED_CHECKPOINTS.items()
            if not entry['hub_repo']] == ['dinat_large_in22k_224',
                                          'dinat_large_in22k_224_11x11interp']


@pytest.mark.parametrize('name', ['nat_small', 'dinat_small_in1k_224', 'dinat_base_in1k_224',
                                  'dinat_large_in22k_in1k_384', 'dinat_mini_in1k_224'])
def test_entry_builds_the_published_model(name):
    """Layer scale where the model has it (NAT-S, NAT-B, DiNAT-B), the dilation preset for the
    model's depths (DiNAT-Mini: the mini list), the kernel."""
    entry = presets.PUBLISHED_CHECKPOINTS[name]
    model = NAT(arch=entry['arch'], kernel_size=entry['kernel_size'],
                dilations=entry['dilations'], layer_scale=entry['layer_scale'])
    has_layer_scale = model.levels[0].blocks[0].gamma1 is not None
    assert has_layer_scale == (name in ('nat_small', 'dinat_base_in1k_224'))
    expected = {'dinat_large_in22k_in1k_384': presets.DILATIONS_384,
                'dinat_mini_in1k_224': presets.DILATIONS_224_MINI}.get(name)
    if expected or entry['dilations']:
        assert model.dilations == (expected or presets.DILATIONS_224)


def _config_checkpoint(config):
    """The checkpoint file a config names: its own, else that of the _base_ it takes the
    backbone from (read from the text: building the configs needs mmdet / mmseg)."""
    text = config.read_text()
    found = re.findall(r"checkpoint='checkpoints/([\w.]+)'", text)
    for base in re.findall(r"'\./(_base_/\w+\.py)'", text):
        if not found and 'backbone={{_base_.' in text:
            found = re.findall(r"checkpoint='checkpoints/([\w.]+)'",
                               (config.parent / base).read_text())
    assert len(found) == 1, config.name
    return found[0]


def test_configs_column_is_every_config_that_names_the_file():
    named = {}
    for config in sorted((REPO_ROOT / 'configs').glob('*.py')):
        named.setdefault(_config_checkpoint(config), []).append(config.name)
    for entry in presets.PUBLISHED_CHECKPOINTS.values():
        assert sorted(entry['configs']) == sorted(named.pop(entry['file'], [])), entry['file']
    assert named == {}, f'configs naming files that are not in the table: {named}'
