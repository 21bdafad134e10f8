"""Every way a pretrained checkpoint can be unusable gives one CheckpointError naming the file,
what is wrong and what to do, raised through init_cfg=dict(type='Pretrained', ...).

``DAMAGED`` builds each case in a folder; ``checkpoint_error(case, folder)`` returns its
message (tools that tabulate the messages can call both)."""
import io
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nat_mm import NAT
from nat_mm.models.checkpoint import (CheckpointError, CheckpointNotFoundError, read_checkpoint,
                                      sniff_format)

HF_DATA = Path(__file__).resolve().parents[1] / 'data' / 'hf'
#: A small NAT; its own state dict makes the "good" checkpoints the cases damage.
SMALL_ARCH = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), mlp_ratio=2.)


def small_state():
    return NAT(arch=SMALL_ARCH).state_dict()


def _torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def truncated(folder):
    path = folder / 'nat_small.pth'
    path.write_bytes(_torch_bytes(small_state())[:5000])
    return path


def zero_bytes(folder):
    path = folder / 'nat_tiny.pth'
    path.write_bytes(b'')
    return path


def image(folder):
    path = folder / 'nat_mini.pth'
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(200))
    return path


def text(folder):
    """A Git LFS pointer: what a clone without git-lfs has in place of the file."""
    path = folder / 'dinat_tiny_in1k_224.pth'
    path.write_text('version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1\n')
    return path


def html_page(folder):
    path = folder / 'nat_base.pth'
    path.write_text('<!DOCTYPE html><html><body>404 Not Found</body></html>')
    return path


def swin(folder):
    path = folder / 'swin_tiny.pth'
    torch.save({'state_dict': {
        'patch_embed.projection.weight': torch.zeros(96, 3, 4, 4),
        'stages.0.blocks.0.attn.w_msa.relative_position_bias_table': torch.zeros(169, 3),
        'stages.0.blocks.0.attn.w_msa.qkv.weight': torch.zeros(288, 96)}}, path)
    return path


def resnet(folder):
    path = folder / 'resnet50.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'bn1.weight': torch.zeros(64),
                'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)}, path)
    return path


def natten_020(folder):
    """A NAT state dict as a NATTEN >= 0.20 training writes it: no attn.rpb."""
    path = folder / 'nat_natten020.pth'
    torch.save({k: v for k, v in small_state().items() if not k.endswith('attn.rpb')}, path)
    return path


def safetensors_int(folder):
    path = folder / 'model.safetensors'
    state = small_state()
    state['levels.1.blocks.0.attn.qkv.weight'] = torch.zeros(96, 32, dtype=torch.int32)
    save_file(state, path)
    return path


def safetensors_truncated(folder):
    path = folder / 'model.safetensors'
    save_file(small_state(), path)
    path.write_bytes(path.read_bytes()[:-1000])
    return path


def safetensors_bad_header(folder):
    """A header whose dtype disagrees with the byte span of its tensor."""
    header = b'{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,40]}}'
    path = folder / 'model.safetensors'
    path.write_bytes(struct.pack('<Q', len(header)) + header + bytes(40))
    return path


def missing(folder):
    return folder / 'checkpoints' / 'dinat_large_in22k_224.pth'


def folder_without_weights(folder):
    target = folder / 'snapshot'
    target.mkdir()
    (target / 'config.json').write_text('{}')
    return target


#: case -> (builder(folder) -> path, the message's parts).
DAMAGED = {
    'truncated': (truncated, ['is damaged or incomplete: torch.load cannot read its 5000 bytes',
                              'Download it again: "nat-mm-download '
                              'nat_small --force" (checks the size; or by hand from '
                              'https://shi-labs.com/projects/nat/checkpoints/CLS/nat_small.pth)']),
    'zero_bytes': (zero_bytes, ['is empty (0 bytes): a download or copy that did not finish',
                                'nat-mm-download nat_tiny --force']),
    'image': (image, ['is not a checkpoint: it is a PNG image (208 bytes), not a PyTorch (.pth, '
                      '.bin) or safetensors file', 'nat-mm-download nat_mini --force']),
    'text': (text, ['is not a checkpoint: it is a Git LFS pointer (fetch the file itself: git lfs '
                    'pull) (66 bytes)',
                    'nat-mm-download dinat_tiny_in1k_224 --force']),
    'html_page': (html_page, ['is not a checkpoint: it is an HTML page (a download that '
                              'returned an error page?)',
                              'nat-mm-download nat_base --force']),
    'swin': (swin, ['holds no NAT / DiNAT weights: none of its 3 tensors has a NAT parameter '
                    'name', 'it looks like a checkpoint of a Swin Transformer',
                    'Use a NAT / DiNAT checkpoint']),
    'resnet': (resnet, ['holds no NAT / DiNAT weights', 'it looks like a checkpoint of a ResNet',
                        'Use a NAT / DiNAT checkpoint (official .pth or a shi-labs/nat-*, '
                        'shi-labs/dinat-* Hub snapshot), or set prefix= in the Pretrained '
                        'init_cfg']),
    'natten_020': (natten_020, ['has attention weights but no relative position biases '
                                '(attn.rpb): a NAT trained with NATTEN >= 0.20',
                                'Use the published weights, or train from scratch']),
    'safetensors_int': (safetensors_int, ['tensor levels.1.blocks.0.attn.qkv.weight is int32, '
                                          'not a floating-point type',
                                          'Use the published checkpoint or re-export the weights '
                                          'as float32']),
    'safetensors_truncated': (safetensors_truncated, [
        'is a damaged or incomplete safetensors file', 'Download it again, or point init_cfg at '
        'an intact copy ("nat-mm-download --list" lists the published '
        'checkpoints)']),
    'safetensors_bad_header': (safetensors_bad_header, [
        'is a damaged or incomplete safetensors file (105 bytes; SafetensorError: ',
        'Download it again, or point init_cfg at an intact copy']),
    'missing': (missing, ["It is the published checkpoint 'dinat_large_in22k_224': "
                          '"nat-mm-download dinat_large_in22k_224" fetches it '
                          '(official address https://shi-labs.com/projects/dinat/checkpoints/'
                          'imagenet22k/dinat_large_in22k_224.pth)',
                          'model.backbone.init_cfg=None']),
    'folder_without_weights': (folder_without_weights, [
        'has neither model.safetensors nor pytorch_model.bin: give a Hugging Face Hub snapshot '
        'folder (config.json + model.safetensors or pytorch_model.bin) or a checkpoint file']),
}


def checkpoint_error(case, folder):
    """The CheckpointError that loading case ``case`` (built in ``folder``) into a NAT raises."""
    path = DAMAGED[case][0](Path(folder))
    model = NAT(arch=SMALL_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    try:
        model.init_weights()
    except CheckpointError as error:
        return path, error
    raise AssertionError(f'{case}: loaded without an error')


@pytest.mark.parametrize('case', sorted(DAMAGED))
def test_one_clear_error_per_damage(tmp_path, case):
    path, error = checkpoint_error(case, tmp_path)
    message = str(error)
    assert str(path) in message, message
    for part in DAMAGED[case][1]:
        assert part in message, message
    assert isinstance(error, CheckpointNotFoundError) == (case == 'missing')


def test_missing_file_is_still_a_file_not_found_error(tmp_path):
    path = tmp_path / 'nat_tiny.pth'
    with pytest.raises(FileNotFoundError) as error:
        read_checkpoint(path)
    assert str(error.value).startswith(
        f"NAT pretrained checkpoint '{path}' not found. It is the published checkpoint "
        "'nat_tiny': \"nat-mm-download nat_tiny\" fetches it")


@pytest.mark.parametrize('builder, kind', [
    (truncated, 'torch'), (zero_bytes, 'empty'), (image, 'a PNG image'),
    (text, 'a Git LFS pointer (fetch the file itself: git lfs pull)'),
    (safetensors_truncated, 'safetensors'), (swin, 'torch')])
def test_sniff_format(tmp_path, builder, kind):
    assert sniff_format(builder(tmp_path)) == kind


def test_plain_text_is_text(tmp_path):
    (tmp_path / 'notes.pth').write_text('weights are on the other disk\n')
    assert sniff_format(tmp_path / 'notes.pth') == 'text'


def test_good_small_checkpoint_loads(tmp_path):
    """The state the cases damage loads when intact (so the errors come from the damage)."""
    state = small_state()
    torch.save(state, tmp_path / 'good.pth')
    save_file(state, tmp_path / 'good.safetensors')
    for name in ('good.pth', 'good.safetensors'):
        model = NAT(arch=SMALL_ARCH, init_cfg=dict(type='Pretrained',
                                                   checkpoint=str(tmp_path / name)))
        model.init_weights()
        assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
