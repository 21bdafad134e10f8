"""tools/demo.py end to end on tiny generated data: generation, the real Runner, the real
metrics, the checkpoint and the picture; then tools/test.py on the checkpoint."""
import json
import math
from pathlib import Path

import pytest
from PIL import Image

TINY = {
    'seg': dict(size=(64, 64), options=[
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
        'train_dataloader.batch_size=2'], metrics=('mIoU', 'mAcc', 'aAcc'), panels=3),
    'det': dict(size=(64, 80), options=[
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1'],
        metrics=('coco/bbox_mAP', 'coco/segm_mAP'), panels=2),
}


@pytest.fixture(scope='module', params=sorted(TINY))
def demo_run(request, tmp_path_factory, load_tool):
    task, tiny = request.param, TINY[request.param]
    root = tmp_path_factory.mktemp(f'demo_{task}')
    height, width = tiny['size']
    result = load_tool('demo').main([
        '--task', task, '--work-dir', str(root / 'work'), '--data-root', str(root / 'data'),
        '--num-pictures', '2', '--cfg-options', 'demo_data.num_train=4', 'demo_data.num_val=2',
        f'demo_data.image_size=({height},{width})', 'default_hooks.logger.interval=1',
        *tiny['options']])
    return task, root, result


@pytest.mark.slow
def test_demo_trains_evaluates_and_draws(demo_run, train_log):
    task, root, result = demo_run
    tiny = TINY[task]
    assert (root / 'data' / '.nat_mm_synthetic.json').is_file()
    assert set(result['metrics']) >= set(tiny['metrics'])
    for name, value in result['metrics'].items():
        assert value == -1 or 0 <= value <= 100, (name, value)   # percent; -1: not computed
    assert Path(result['checkpoint']).is_file()
    losses = [loss for _, loss in train_log(Path(result['picture']).parent)]
    assert len(losses) >= 2 and all(math.isfinite(loss) for loss in losses)

    picture = Image.open(result['picture'])
    height, width = tiny['size']
    # two rows of panels, each panel enlarged twice, under a 14-pixel title strip
    assert picture.size == (tiny['panels'] * width * 2, 2 * height * 2 + 14)


@pytest.mark.slow
def test_test_tool_evaluates_the_demo_checkpoint(demo_run, load_tool):
    task, root, result = demo_run
    config = load_tool('demo').DEMO_CONFIGS[task]
    data_root = root / 'data'
    options = [f'test_dataloader.dataset.data_root={data_root}']
    if task == 'det':
        out = root / 'predictions.pkl'
        options.append(f'test_evaluator.ann_file={data_root}/annotations/instances_val2017.json')
    else:
        out = root / 'predictions'
    metrics = load_tool('test').main([
        config, result['checkpoint'], '--work-dir', str(root / 'test'), '--out', str(out),
        '--cfg-options', *options])
    assert set(metrics) >= set(TINY[task]['metrics'])
    if task == 'det':
        assert out.is_file()
    else:
        assert sorted(p.name for p in out.iterdir()) == ['ADE_val_00000001.png',
                                                          'ADE_val_00000002.png']


def test_make_demo_data(tmp_path, load_tool):
    make_demo_data = load_tool('misc/make_demo_data')
    config = load_tool('demo').DEMO_CONFIGS['det']
    make_demo_data.main([config, '--out', str(tmp_path / 'coco'), '--num-train', '3',
                         '--num-val', '1', '--size', '48', '64'])
    train = json.loads((tmp_path / 'coco' / 'annotations' / 'instances_train2017.json')
                       .read_text())
    assert len(train['images']) == 3
    assert (train['images'][0]['height'], train['images'][0]['width']) == (48, 64)
    with pytest.raises(ValueError, match=r'^the config has no demo_data dict; use a config from '
                                         r'configs/demo$'):
        make_demo_data.main([str(Path(config).parents[1] / 'upernet_nat_tiny_ade20k.py')])


@pytest.mark.slow
def test_test_tool_tta(demo_run, load_tool):
    """--tta: the config's tta_pipeline (every scale and flip of each image) merged by its
    tta_model; the metrics come out. Mask R-CNN configs have none (MMDetection's DetTTAModel
    merges boxes only) and say so."""
    task, root, result = demo_run
    config = load_tool('demo').DEMO_CONFIGS[task]
    test = load_tool('test')
    data_root = root / 'data'
    arguments = [config, result['checkpoint'], '--tta', '--work-dir', str(root / 'tta'),
                 '--cfg-options', f'test_dataloader.dataset.data_root={data_root}']
    if task == 'det':
        with pytest.raises(ValueError, match='--tta needs tta_model and tta_pipeline'):
            test.main(arguments)
        return
    cfg = test.build_config(test.parse_args(arguments))
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.type == 'EncoderDecoder'
    augment = cfg.test_dataloader.dataset.pipeline[1]
    assert augment.type == 'TestTimeAug'
    assert [t.scale_factor for t in augment.transforms[0]] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert [t.prob for t in augment.transforms[1]] == [0., 1.]  # without and with flip
    metrics = test.main(arguments)
    assert set(metrics) >= set(TINY[task]['metrics'])
    assert all(math.isfinite(metrics[name]) for name in TINY[task]['metrics'])
