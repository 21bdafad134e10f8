"""tools/analysis_tools/browse_dataset.py on the tiny generated datasets: pictures with the
annotations drawn, for an MMSegmentation and an MMDetection config."""
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from environment import require_module

from nat_mm.utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = 'analysis_tools/browse_dataset'
DEMOS = {'seg': ('mmseg', 'upernet_nat_demo.py', 'tiny_ade'),
         'det': ('mmdet', 'mask_rcnn_nat_demo.py', 'tiny_coco')}


@pytest.mark.parametrize('task', sorted(DEMOS))
def test_pictures_show_the_annotations(task, load_tool, tmp_path, request):
    """Validation split (a deterministic pipeline): one picture per image, of the size the
    pipeline gives, visibly different from the image alone."""
    package, config, data = DEMOS[task]
    require_module(f'{package}.utils')
    data_root = request.getfixturevalue(data)
    tool = load_tool(TOOL)
    argv = [str(REPO_ROOT / 'configs' / 'demo' / config), '--split', 'val', '--not-show',
            '--output-dir', str(tmp_path), '--max-images', '2',
            '--cfg-options', f'val_dataloader.dataset.data_root={data_root}']
    written = tool.main(argv)
    assert len(written) == 2 and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(path).name for path in written)
    cfg = load_config(argv[0], {'val_dataloader.dataset.data_root': str(data_root)})
    dataset, _ = tool.build_dataset_and_visualizer(cfg, 'val')
    for index, path in enumerate(written):
        item = dataset[index]
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1].astype(float)
        if tool.annotation_size(item['data_samples']) != image.shape[:2]:
            # a test pipeline resizes the image only: the annotations are drawn on the original
            image = np.asarray(Image.open(item['data_samples'].img_path).convert('RGB'), float)
        picture = np.asarray(Image.open(path).convert('RGB'), dtype=float)
        assert picture.shape == image.shape
        assert np.abs(picture - image).mean() > 5      # annotations drawn, not just saved


def test_not_show_needs_an_output_dir(load_tool, capsys):
    with pytest.raises(SystemExit):
        load_tool(TOOL).parse_args(['config.py', '--not-show'])
    assert capsys.readouterr().err.endswith(
        'error: --not-show without --output-dir would draw nothing anyone sees: give --output-dir '
        'DIR, or leave out --not-show\n')


def test_other_libraries_configs_are_refused(load_tool, tmp_path):
    config = tmp_path / 'cls.py'
    config.write_text(textwrap.dedent('''\
        default_scope = 'mmpretrain'
        train_dataloader = dict(dataset=dict(type='ImageNet'))
    '''))
    with pytest.raises(ValueError, match="default_scope 'mmpretrain' is not one of"):
        load_tool(TOOL).main([str(config), '--output-dir', str(tmp_path), '--not-show'])
