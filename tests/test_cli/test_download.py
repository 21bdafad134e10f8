"""``nat-mm-download`` (nat_mm/cli/download.py) against a loopback HTTP server (127.0.0.1 only;
it stops by itself after SERVER_LIFETIME_S) and a Hugging Face Hub cache folder built here:
progress, size check, resume, no partial file under the final name, Hub copies checked and
converted, and what to do by hand when nothing can be reached. Nothing leaves the machine."""
import hashlib
import io
import json
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from environment import require_module
from nat_mm.cli import download
from nat_mm.models.checkpoint import nat_arguments
from nat_mm.models.presets import PUBLISHED_CHECKPOINTS

HF_DATA = Path(__file__).resolve().parents[1] / 'data' / 'hf'
SERVER_LIFETIME_S = 120
NAT_MINI_PATH = '/projects/nat/checkpoints/CLS/nat_mini.pth'


@pytest.fixture(scope='module')
def tool():
    """The command's module: ``tool.main(argv)`` is ``nat-mm-download ARGV``."""
    return download


@pytest.fixture(scope='module')
def payload():
    """A real checkpoint file's bytes (3.2 MB), as the server sends them."""
    buffer = io.BytesIO()
    torch.save({'w': torch.arange(800_000, dtype=torch.float32)}, buffer)
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    """GET with Range support; ``server.cut[path] = n`` sends the first n bytes of a whole-file
    response once, then closes the connection (an interrupted transfer)."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get('Range')))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        requested = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
        if requested:
            start = int(requested[1])
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
        else:
            self.send_response(200)
        self.send_header('Content-Length', str(len(body) - start))
        self.end_headers()
        cut = None if requested else server.cut.pop(self.path, None)
        self.wfile.write(body[start:cut])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """(base URL, server): files in ``server.files`` (path -> bytes), requests recorded."""
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    httpd.files, httpd.requests, httpd.cut = {}, [], {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stop = threading.Timer(SERVER_LIFETIME_S, httpd.shutdown)
    stop.daemon = True
    stop.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}', httpd
    stop.cancel()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def test_download_shows_progress_checks_size_and_uses_the_configs_name(tool, server, payload,
                                                                        tmp_path, capsys):
    url, httpd = server
    httpd.files[NAT_MINI_PATH] = payload
    assert tool.main(['nat_mini', '--mirror', url, '--dest', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    target = tmp_path / 'nat_mini.pth'
    assert target.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ['nat_mini.pth']
    progress = re.findall(r'nat_mini\.pth: ([\d.]+) / 3\.2 MB \((\d+)%\)', out)
    assert len(progress) >= 3 and progress[-1] == ('3.2', '100')
    assert (f'nat_mini: {target} ({len(payload)} bytes, size checked) from '
            f'{url}{NAT_MINI_PATH}') in out
    assert httpd.requests == [(NAT_MINI_PATH, None)]


def test_interrupted_download_keeps_only_the_part_file_and_resumes(tool, server, payload,
                                                                    tmp_path, capsys):
    url, httpd = server
    httpd.files[NAT_MINI_PATH] = payload
    httpd.cut[NAT_MINI_PATH] = 1_500_000
    args = ['nat_mini', '--mirror', url, '--dest', str(tmp_path), '--source', 'official']
    assert tool.main(args) == 1
    err = capsys.readouterr().err
    part = tmp_path / 'nat_mini.pth.part'
    assert not (tmp_path / 'nat_mini.pth').exists()
    assert part.stat().st_size == 1_500_000
    assert (f'interrupted after 1500000 of {len(payload)} bytes; {part} is kept: run the same '
            'command again to resume') in err
    assert tool.main(args) == 0
    assert (tmp_path / 'nat_mini.pth').read_bytes() == payload
    assert not part.exists()
    assert httpd.requests == [(NAT_MINI_PATH, None), (NAT_MINI_PATH, 'bytes=1500000-')]


def test_an_error_page_is_not_saved(tool, server, tmp_path, capsys):
    url, httpd = server
    httpd.files[NAT_MINI_PATH] = b'<!DOCTYPE html><html>Service moved</html>'
    assert tool.main(['nat_mini', '--mirror', url, '--dest', str(tmp_path),
                      '--source', 'official']) == 1
    assert list(tmp_path.iterdir()) == []
    assert ('the server sent an HTML page (a download that returned an error page?) (41 bytes), '
            'not a checkpoint') in capsys.readouterr().err


def test_existing_file_is_kept(tool, server, tmp_path, capsys):
    url, httpd = server
    (tmp_path / 'nat_mini.pth').write_bytes(b'kept')
    assert tool.main(['nat_mini', '--mirror', url, '--dest', str(tmp_path)]) == 0
    assert 'is already there (4 bytes; --force to fetch again)' in capsys.readouterr().out
    assert httpd.requests == []


@pytest.mark.parametrize('hub', ['installed', 'not installed'])
def test_offline_says_what_to_download_by_hand_and_where(tool, tmp_path, capsys, monkeypatch,
                                                         hub):
    """Nothing reachable: the official address refuses, the Hub cache is empty; or
    huggingface_hub cannot be imported (``None`` in sys.modules: as if not installed)."""
    if hub == 'installed':
        require_module('huggingface_hub')
    else:
        monkeypatch.setitem(sys.modules, 'huggingface_hub', None)
    dest = tmp_path / 'checkpoints'
    status = tool.main(['nat_mini', 'dinat_large_in22k_224', '--mirror',
                        f'http://127.0.0.1:{closed_port()}', '--dest', str(dest), '--hub-offline',
                        '--hub-cache', str(tmp_path / 'hub'), '--timeout', '5'])
    assert status == 1
    err = capsys.readouterr().err
    assert 'nat_mini: could not fetch it. official address: http://127.0.0.1:' in err
    assert 'Connection refused' in err
    if hub == 'not installed':
        assert 'Hub: huggingface_hub is not installed (pip install huggingface_hub)' in err
    else:
        assert 'Hub: Hub shi-labs/nat-mini-in1k-224: ' in err
    assert 'dinat_large_in22k_224: could not fetch it.' in err
    assert 'Hub: the Hugging Face Hub has no copy of this file' in err
    assert ('nat_mini: download https://shi-labs.com/projects/nat/checkpoints/CLS/nat_mini.pth and '
            f'put it at {dest / "nat_mini.pth"}; or download the Hub folder '
            'https://huggingface.co/shi-labs/nat-mini-in1k-224 (config.json and '
            'pytorch_model.bin)') in err
    assert ('dinat_large_in22k_224: download https://shi-labs.com/projects/dinat/checkpoints/'
            f'imagenet22k/dinat_large_in22k_224.pth and put it at '
            f'{dest / "dinat_large_in22k_224.pth"}\n') in err
    assert list(dest.iterdir()) == []


def test_list_names_every_checkpoint_with_its_configs(tool, capsys):
    assert tool.main(['--list']) == 0
    out = capsys.readouterr().out
    for name, entry in PUBLISHED_CHECKPOINTS.items():
        assert f'{name}\n  file     checkpoints/{entry["file"]}\n  official {entry["url"]}' in out
    assert 'configs  upernet_nat_tiny_ade20k.py, mask_rcnn_nat_tiny_coco.py' in out
    assert ('evaluate config configs/mmpretrain/nat/nat-tiny_8xb128_in1k.py with checkpoint '
            'checkpoints/nat_tiny.pth') in out


def test_unknown_name_is_refused_with_the_names(tool, capsys):
    with pytest.raises(SystemExit):
        tool.main(['nat_huge'])
    assert 'unknown checkpoint name(s) nat_huge; names: nat_mini, nat_tiny' in \
        capsys.readouterr().err


def hub_cache(root, repo, folder, damage=False):
    """A huggingface_hub cache holding ``folder``'s files as the snapshot of ``repo``: each
    file a blob named by its SHA-256 (what the Hub publishes for LFS files), linked from
    snapshots/<commit>/, refs/main naming the commit."""
    repo_dir = root / f'models--{repo.replace("/", "--")}'
    commit = 'c0ffee' * 6 + 'c0ff'
    (repo_dir / 'refs').mkdir(parents=True)
    (repo_dir / 'refs' / 'main').write_text(commit)
    (repo_dir / 'blobs').mkdir()
    (repo_dir / 'snapshots' / commit).mkdir(parents=True)
    for name in ('model.safetensors', 'config.json'):
        data = (folder / name).read_bytes()
        blob = repo_dir / 'blobs' / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data[:-1] + b'\0' if damage and name == 'model.safetensors' else data)
        (repo_dir / 'snapshots' / commit / name).symlink_to(Path('..', '..', 'blobs', blob.name))
    return root


def _entry(folder):
    """A PUBLISHED_CHECKPOINTS-like entry for a golden folder's model."""
    arguments = nat_arguments(json.loads((HF_DATA / folder / 'config.json').read_text()))
    return dict(file=f'{folder}.pth', arch=arguments['arch'],
                kernel_size=arguments['kernel_size'], dilations=arguments['dilations'],
                layer_scale=arguments['layer_scale'], hub_repo=f'test-org/{folder}',
                hub_file='model.safetensors')


@pytest.mark.parametrize('folder', ['dinat_k7', 'nat_k7'])
def test_hub_copy_is_checked_converted_and_gives_the_golden_numbers(tool, tmp_path, folder,
                                                                   assert_transformers_features):
    require_module('huggingface_hub')
    cache = hub_cache(tmp_path / 'hub', f'test-org/{folder}', HF_DATA / folder)
    target = tmp_path / 'checkpoints' / f'{folder}.pth'
    target.parent.mkdir()
    count = tool.fetch_from_hub(_entry(folder), str(target), cache_dir=str(cache), offline=True)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    saved = torch.load(target, weights_only=True)
    assert len(saved['state_dict']) == count
    assert saved['meta']['source'] == \
        f'https://huggingface.co/test-org/{folder} (model.safetensors)'
    assert not any(key.startswith(('encoder.', 'embeddings.')) for key in saved['state_dict'])
    assert_transformers_features(target, folder)


def test_hub_copy_keeps_the_classifier_head(tool, tmp_path):
    """The file written from a Hub copy is the whole official classifier: its final norm and
    head load into the MMPretrain classifier, which then gives Transformers' logits."""
    pytest.importorskip('huggingface_hub')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cache = hub_cache(tmp_path / 'hub', 'test-org/dinat_k7', HF_DATA / 'dinat_k7')
    target = tmp_path / 'dinat_k7.pth'
    tool.fetch_from_hub(_entry('dinat_k7'), str(target), cache_dir=str(cache), offline=True)
    saved = torch.load(target, weights_only=True)['state_dict']
    assert saved['head.weight'].shape == (10, 128) and saved['norm.weight'].shape == (128, )
    init_default_scope('mmpretrain')
    arguments = nat_arguments(json.loads((HF_DATA / 'dinat_k7' / 'config.json').read_text()))
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='NAT', out_indices=(3, ), **arguments),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=128),
        init_cfg=dict(type='Pretrained', checkpoint=str(target))))
    model.init_weights()
    golden = torch.load(HF_DATA / 'dinat_k7' / 'golden.pt', weights_only=True)
    with torch.no_grad():
        logits = model.double().eval()(golden['input'], mode='tensor')
    torch.testing.assert_close(logits, golden['logits'], rtol=1e-9, atol=1e-12)


def test_damaged_hub_file_fails_the_published_hash(tool, tmp_path):
    require_module('huggingface_hub')
    cache = hub_cache(tmp_path / 'hub', 'test-org/nat_k7', HF_DATA / 'nat_k7', damage=True)
    target = tmp_path / 'nat_k7.pth'
    with pytest.raises(tool.DownloadError, match=r'SHA-256 [0-9a-f]{64}, the Hub publishes '
                                                 r'[0-9a-f]{64}: the cached file is damaged'):
        tool.fetch_from_hub(_entry('nat_k7'), str(target), cache_dir=str(cache), offline=True)
    assert list(tmp_path.iterdir()) == [tmp_path / 'hub']


def test_hub_copy_of_another_model_is_refused(tool, tmp_path):
    """The Hub snapshot's config.json disagrees with the entry's model: nothing is written."""
    require_module('huggingface_hub')
    cache = hub_cache(tmp_path / 'hub', 'test-org/dinat_k7', HF_DATA / 'dinat_k7')
    entry = dict(_entry('dinat_k7'), hub_repo='test-org/dinat_k7')
    entry['arch'] = dict(entry['arch'], num_heads=[1, 2, 4, 4])
    with pytest.raises(tool.DownloadError, match=r'Hub test-org/dinat_k7: checkpoint .*does not '
                                                 r'fit the model: config.json has num_heads='
                                                 r'\[2, 2, 4, 4\], the model has num_heads=\[1, 2, '
                                                 r'4, 4\]'):
        tool.fetch_from_hub(entry, str(tmp_path / 'out.pth'), cache_dir=str(cache), offline=True)
    assert not (tmp_path / 'out.pth').exists() and not (tmp_path / 'out.pth.part').exists()

