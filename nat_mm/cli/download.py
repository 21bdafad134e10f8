"""Download published NAT / DiNAT checkpoints into checkpoints/, under the names the configs use.

Usage (``nat-mm-download``, installed with nat_mm; or ``python -m nat_mm.cli.download``):
    nat-mm-download --list
    nat-mm-download nat_tiny dinat_large_in22k_224
    nat-mm-download --all [--dest checkpoints] [--source hub]

Every name is an entry of ``PUBLISHED_CHECKPOINTS`` (``nat_mm/models/presets.py``;
``--list`` prints them with their files, addresses and the configs that use them).
Sources (``--source``):

- ``official``: the official address. The file is written as ``FILE.part`` and
  renamed to ``FILE`` only once complete: its size equals the size the server
  announced and its first bytes are those of a checkpoint (not an error page).
  An interrupted download keeps ``FILE.part``, and the next run resumes it (HTTP
  Range). ``--mirror URL`` fetches the same paths from another server.
- ``hub``: the Hugging Face Hub copy (Transformers' layout), through
  ``huggingface_hub`` (``pip install huggingface_hub``; its cache, ``--hub-cache``,
  ``--hub-offline`` to use only the cache). The file's SHA-256 is compared with the
  one the Hub publishes (the name of its blob in the cache), the weights are
  checked against ``config.json`` and the model, converted to the official layout
  (the whole classifier: backbone, final norm ``norm.*`` and head ``head.*``) and
  written as ``FILE``.
- ``auto`` (default): official, then the Hub if that fails.

A file already under its final name is kept (``--force`` fetches it again). When a
name cannot be fetched (no network), the tool says where to download it by hand
and where to put it; the exit status is then 1.
"""
import argparse
import hashlib
import os
import os.path as osp
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

import torch

from ..models import NAT
from ..models.checkpoint import CheckpointError, prepare_state_dict, sniff_format
from ..models.checkpoint.classifier import official_classifier_parts
from ..models.checkpoint.messages import CONVERT_COMMAND
from ..models.presets import CHECKPOINT_DIR, DOWNLOAD_COMMAND, PUBLISHED_CHECKPOINTS

CHUNK_BYTES = 1 << 20
SOURCES = ('auto', 'official', 'hub')


class DownloadError(Exception):
    """A checkpoint that could not be fetched; the message says why."""


class Progress:
    """Prints ``FILE: done / total MB (percent)`` every 10 percent (every 10 MB when the
    server announces no size), and once at the end."""

    def __init__(self, label, stream=None):
        self.label, self.stream, self.last = label, stream or sys.stdout, -1

    def __call__(self, done, total):
        step = done * 10 // total if total else done // (10 * CHUNK_BYTES)
        if step == self.last and done != total:
            return
        self.last = step
        of_total = f' / {total / 1e6:.1f} MB ({100 * done // total}%)' if total else ' MB'
        print(f'{self.label}: {done / 1e6:.1f}{of_total}', file=self.stream, flush=True)


def official_url(entry, mirror=None):
    """The official address of an entry, or the same path on ``mirror`` (scheme://host[:port])."""
    if not mirror:
        return entry['url']
    return mirror.rstrip('/') + urllib.parse.urlsplit(entry['url']).path


def _total_size(response, start):
    """The whole file's size from a 200 (Content-Length) or 206 (Content-Range) response."""
    if response.status == 206:
        match = re.match(r'bytes (\d+)-\d+/(\d+)', response.headers.get('Content-Range', ''))
        if not match or int(match[1]) != start:
            raise DownloadError(
                f'the server resumed at another offset than the {start} bytes already there '
                f'(Content-Range {response.headers.get("Content-Range")!r})')
        return int(match[2])
    length = response.headers.get('Content-Length')
    return int(length) if length is not None else None


def download_url(url, path, progress=None, timeout=60):
    """Download ``url`` to ``path``, through ``path + '.part'``, resuming a partial download.

    Args:
        url: http(s) address.
        path: the final file; it appears only once the download is complete and
            checked (size = the announced size, a checkpoint's first bytes).
        progress: callable (bytes done, total bytes or None).
        timeout: seconds to wait for the server at each step.

    Returns:
        the number of bytes.

    Raises:
        DownloadError: the server was unreachable or refused, the transfer broke off
            (``.part`` is kept for the next run), or the file is not what was announced.
    """
    part = path + '.part'
    have = osp.getsize(part) if osp.isfile(part) else 0
    request = urllib.request.Request(url, headers={'Range': f'bytes={have}-'} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            os.remove(part)
            raise DownloadError(
                f'{url}: the server refused to resume the {have} bytes of {part} (HTTP 416); '
                'removed it, run again to start over') from exc
        raise DownloadError(f'{url}: HTTP {exc.code} {exc.reason}') from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f'{url}: {getattr(exc, "reason", exc)}') from exc
    with response:
        start = have if response.status == 206 else 0
        total = _total_size(response, start)
        done = start
        with open(part, 'ab' if start else 'wb') as file:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except OSError as exc:  # a reset connection, a timeout
                    chunk, interruption = b'', exc
                else:
                    interruption = None
                if not chunk:
                    break
                file.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    if total is not None and done < total:
        raise DownloadError(
            f'{url}: interrupted after {done} of {total} bytes'
            f'{f" ({interruption})" if interruption else ""}; {part} is kept: run the same '
            'command again to resume')
    if total is not None and done > total:
        os.remove(part)
        raise DownloadError(f'{url}: received {done} bytes, more than the announced {total}; '
                            'removed the partial file')
    kind = sniff_format(part)
    if kind not in ('torch', 'safetensors'):
        os.remove(part)
        raise DownloadError(f'{url}: the server sent {kind} ({done} bytes), not a checkpoint')
    os.replace(part, path)
    return done


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(CHUNK_BYTES), b''):
            digest.update(block)
    return digest.hexdigest()


def check_hub_file(path):
    """Compare a Hub cache file with the SHA-256 the Hub published for it.

    huggingface_hub stores a large (LFS) file as ``blobs/<sha256>`` and links the
    snapshot's file name to it, so the blob's name is the published hash.

    Returns:
        the hash, or None when the file is not stored under one (small files).

    Raises:
        DownloadError: the content does not have that hash.
    """
    blob = os.path.realpath(path)
    published = osp.basename(blob)
    if not re.fullmatch(r'[0-9a-f]{64}', published):
        return None
    actual = _file_sha256(blob)
    if actual != published:
        raise DownloadError(
            f'{path}: SHA-256 {actual}, the Hub publishes {published}: the cached file is damaged. '
            f'Delete {blob} and run again')
    return actual


def fetch_from_hub(entry, path, cache_dir=None, offline=False):
    """Get an entry's Hub copy, check it, convert it to the official layout and save it.

    Args:
        entry: a :data:`PUBLISHED_CHECKPOINTS` entry (or one alike) with a ``hub_repo``.
        path: the final file; written through ``path + '.part'``.
        cache_dir: huggingface_hub's cache folder (None: its default).
        offline: use only files already in the cache.

    Returns:
        the number of tensors written (backbone, final norm and head).

    Raises:
        DownloadError: no Hub copy, no huggingface_hub, the Hub unreachable, a
            damaged file or weights that do not fit the entry's model.
    """
    if not entry.get('hub_repo'):
        raise DownloadError('the Hugging Face Hub has no copy of this file')
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise DownloadError('huggingface_hub is not installed (pip install huggingface_hub)') \
            from exc
    repo = entry['hub_repo']
    try:
        files = [hf_hub_download(repo, name, cache_dir=cache_dir, local_files_only=offline)
                 for name in (entry['hub_file'], 'config.json')]
    except Exception as exc:  # huggingface_hub's HTTP, offline and not-found errors
        message = str(exc).strip().splitlines()
        raise DownloadError(f'Hub {repo}: {type(exc).__name__}: {message[0] if message else ""}') \
            from exc
    check_hub_file(files[0])
    model = NAT(arch=entry['arch'], kernel_size=entry['kernel_size'],
                dilations=entry['dilations'], layer_scale=entry.get('layer_scale'))
    try:
        state_dict, _, _, _ = prepare_state_dict(files[0], model)  # with config.json beside it
        state_dict.update(official_classifier_parts(files[0]))
    except CheckpointError as exc:
        raise DownloadError(f'Hub {repo}: {exc}') from exc
    meta = dict(arch=entry['arch'], kernel_size=entry['kernel_size'],
                source=f'https://huggingface.co/{repo} ({entry["hub_file"]})')
    torch.save({'state_dict': state_dict, 'meta': meta}, path + '.part')
    os.replace(path + '.part', path)
    return len(state_dict)


def by_hand(name, entry, path):
    """What to download by hand for one entry, and where to put it."""
    text = f'download {entry["url"]} and put it at {path}'
    if entry.get('hub_repo'):
        text += (f'; or download the Hub folder https://huggingface.co/{entry["hub_repo"]} '
                 f'(config.json and {entry["hub_file"]}) and load the folder itself with '
                 "init_cfg=dict(type='Pretrained', checkpoint=FOLDER), or convert it with "
                 f'"{CONVERT_COMMAND} FOLDER {path}"')
    return f'{name}: {text}'


def fetch(name, entry, dest, args):
    """Fetch one entry into ``dest``; returns a line to print. Raises DownloadError."""
    path = osp.join(dest, entry['file'])
    if osp.isfile(path) and not args.force:
        return (f'{name}: {path} is already there ({osp.getsize(path)} bytes; --force to fetch '
                'again)')
    failures = []
    if args.source in ('auto', 'official'):
        url = official_url(entry, args.mirror)
        try:
            size = download_url(url, path, Progress(entry['file']), timeout=args.timeout)
            return f'{name}: {path} ({size} bytes, size checked) from {url}'
        except DownloadError as exc:
            failures.append(f'official address: {exc}')
    if args.source in ('auto', 'hub'):
        try:
            count = fetch_from_hub(entry, path, args.hub_cache, args.hub_offline)
            if osp.isfile(path + '.part'):  # an official download the Hub made unnecessary
                os.remove(path + '.part')
            return (f'{name}: {path} ({count} tensors: backbone, final norm, head) from the '
                    f'Hub copy {entry["hub_repo"]}, converted to the official layout')
        except DownloadError as exc:
            failures.append(f'Hub: {exc}')
    raise DownloadError(f'{name}: could not fetch it. ' + '. '.join(failures))


def list_checkpoints(dest):
    """The ``--list`` text (str): per name its file under ``dest``, its addresses, the
    configs that load it and the classifier config that evaluates it."""
    lines = []
    for name, entry in PUBLISHED_CHECKPOINTS.items():
        hub = f'https://huggingface.co/{entry["hub_repo"]}' if entry['hub_repo'] else 'none'
        evaluate = (f'config configs/{entry["classifier_config"]} with checkpoint '
                    f'{osp.join(dest, entry["file"])}' if entry['classifier_config'] else '-')
        lines.append(f'{name}\n  file     {osp.join(dest, entry["file"])}\n'
                     f'  official {entry["url"]}\n  hub      {hub}\n'
                     f'  configs  {", ".join(entry["configs"]) or "-"}\n'
                     f'  evaluate {evaluate}')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=DOWNLOAD_COMMAND, description=__doc__.split('\n\n')[0],
        epilog=f'names: {", ".join(PUBLISHED_CHECKPOINTS)}')
    parser.add_argument('names', nargs='*', help='checkpoint names (see --list)')
    parser.add_argument('--all', action='store_true', help='every published checkpoint')
    parser.add_argument('--list', action='store_true', help='list the checkpoints and exit')
    parser.add_argument('--dest', default=CHECKPOINT_DIR,
                        help=f'folder to put the files in (default: {CHECKPOINT_DIR})')
    parser.add_argument('--source', choices=SOURCES, default='auto',
                        help='official address, Hugging Face Hub, or official then Hub (default)')
    parser.add_argument('--mirror', help='fetch the official paths from this server instead '
                                         '(scheme://host[:port])')
    parser.add_argument('--hub-cache', help="huggingface_hub's cache folder (default: its own)")
    parser.add_argument('--hub-offline', action='store_true',
                        help='take Hub files only from the cache')
    parser.add_argument('--force', action='store_true', help='fetch files that are already there')
    parser.add_argument('--timeout', type=float, default=60,
                        help='seconds to wait for a server (default: 60)')
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in PUBLISHED_CHECKPOINTS]
    if unknown:
        parser.error(f'unknown checkpoint name(s) {", ".join(unknown)}; names: '
                     f'{", ".join(PUBLISHED_CHECKPOINTS)}')
    if not args.list and not args.all and not args.names:
        parser.error('give checkpoint names, --all or --list')
    return args


def main(argv=None):
    """``nat-mm-download``: fetch the named checkpoints; returns the exit status (0, or 1
    when one could not be fetched)."""
    args = parse_args(argv)
    if args.list:
        print(list_checkpoints(args.dest))
        return 0
    os.makedirs(args.dest, exist_ok=True)
    names = list(PUBLISHED_CHECKPOINTS) if args.all else args.names
    failed = []
    for name in names:
        entry = PUBLISHED_CHECKPOINTS[name]
        try:
            print(fetch(name, entry, args.dest, args), flush=True)
        except DownloadError as exc:
            print(exc, file=sys.stderr, flush=True)
            failed.append(name)
    if failed:
        print('\nNot fetched. By hand:\n' + '\n'.join(
            '  ' + by_hand(name, PUBLISHED_CHECKPOINTS[name],
                           osp.join(args.dest, PUBLISHED_CHECKPOINTS[name]['file']))
            for name in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
