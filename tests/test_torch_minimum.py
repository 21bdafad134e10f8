"""setup.cfg's ``torch>=`` is the newest minimum among the torch APIs nat_mm calls.

Only the tested torch (the pinned 2.13.0) runs here, so an older torch cannot be tried;
instead the APIs below, each with the first torch release that has it in the form nat_mm
calls it, are looked up in nat_mm's source. Adding a call to a newer API listed here (or
raising an API's minimum) without raising setup.cfg's minimum fails this test.
"""
import configparser
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Call -> first torch version that has it as nat_mm calls it.
TORCH_API_MINIMUM = {
    'torch.amp.custom_fwd(': (2, 4),      # with device_type=
    'torch.amp.custom_bwd(': (2, 4),
    'torch.compiler.disable': (2, 1),
    'torch.sparse.sampled_addmm': (1, 13),  # CPU support
    'torch.sparse_csr_tensor': (1, 10),
    'torch.nn.attention': (2, 2),
    'torch.serialization.add_safe_globals': (2, 4),
}
#: Used only behind a check for its presence (nat_mm/utils/torch_load.py).
OPTIONAL_APIS = {'torch.serialization.add_safe_globals'}


def declared_torch_minimum():
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / 'setup.cfg')
    requirement = next(line for line in setup['options']['install_requires'].split()
                       if line.startswith('torch'))
    match = re.fullmatch(r'torch>=(\d+)\.(\d+)', requirement)
    assert match, f'setup.cfg: expected torch>=X.Y, got {requirement!r}'
    return int(match[1]), int(match[2])


def used_apis():
    source = '\n'.join(path.read_text() for path in (REPO_ROOT / 'nat_mm').rglob('*.py'))
    source = re.sub(r'\s+', '', source)  # calls split over lines still match
    return {api for api in TORCH_API_MINIMUM if re.sub(r'\s+', '', api) in source}


def test_the_lookup_finds_what_nat_mm_uses():
    assert {'torch.amp.custom_fwd(', 'torch.compiler.disable',
            'torch.sparse.sampled_addmm'} <= used_apis()


def test_setup_cfg_declares_the_newest_minimum_of_the_apis_used():
    required = max(TORCH_API_MINIMUM[api] for api in used_apis() - OPTIONAL_APIS)
    assert declared_torch_minimum() == required
