"""The checkpoint a resumed run loads (nat_mm.launch.resume): real torch.save files, cut
where a kill during the write leaves them."""
import pytest
import torch
from mmengine.config import Config

from nat_mm.launch import resolve_resume_checkpoint
from nat_mm.launch.resume import complete_checkpoints
from nat_mm.models.checkpoint import checkpoint_damage


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep >= 0 else len(data) + keep])

def _save(path, step):
    torch.save(dict(meta=dict(iter=step), state_dict=dict(w=torch.full((64, 64), float(step)))),
               path)


@pytest.fixture
def work_dir(tmp_path):
    """iter_2.pth, iter_4.pth, last_checkpoint -> iter_4.pth (as MMEngine writes them)."""
    for step in (2, 4):
        _save(tmp_path / f'iter_{step}.pth', step)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    return tmp_path


#: Where a kill during torch.save can cut a checkpoint: bytes kept (negative: from the end).
CUTS = [0, 1, 1000, 0.5, -22, -1]


def _cut(path, cut):
    size = path.stat().st_size
    _truncate(path, int(size * cut) if isinstance(cut, float) else cut)


@pytest.mark.parametrize('cut', CUTS)
def test_a_cut_checkpoint_is_damaged_and_would_crash_torch_load(work_dir, cut):
    path = work_dir / 'iter_4.pth'
    assert checkpoint_damage(str(path)) is None
    _cut(path, cut)
    assert checkpoint_damage(str(path)) is not None
    with pytest.raises(Exception):          # what resuming from it would do without the check
        torch.load(path, weights_only=True)


@pytest.mark.parametrize('cut', CUTS)
def test_auto_resume_falls_back_to_the_latest_complete_checkpoint(work_dir, cut, logged):
    _cut(work_dir / 'iter_4.pth', cut)
    damage = checkpoint_damage(str(work_dir / 'iter_4.pth'))
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    assert resolve_resume_checkpoint(cfg) == str(work_dir / 'iter_2.pth')
    assert cfg.load_from == str(work_dir / 'iter_2.pth')
    assert logged == [
        f'--resume: the latest checkpoint {work_dir / "iter_4.pth"} (named by '
        f'{work_dir / "last_checkpoint"}) is damaged: {damage}; resuming from the latest '
        f'complete checkpoint {work_dir / "iter_2.pth"} instead.']


@pytest.mark.parametrize('pointer, problem', [
    ('', 'last_checkpoint is empty'),
    ('missing.pth', 'names missing.pth, which does not exist'),
    (None, 'there is no '),
])
def test_auto_resume_with_a_bad_pointer_uses_the_latest_complete_checkpoint(
        work_dir, pointer, problem, logged):
    if pointer is None:
        (work_dir / 'last_checkpoint').unlink()
    else:
        (work_dir / 'last_checkpoint').write_text(pointer)
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    assert resolve_resume_checkpoint(cfg) == str(work_dir / 'iter_4.pth')
    assert len(logged) == 1 and problem in logged[0]


def test_auto_resume_from_a_complete_latest_checkpoint_changes_nothing(work_dir):
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    assert resolve_resume_checkpoint(cfg) == str(work_dir / 'iter_4.pth')
    assert cfg.load_from is None                  # MMEngine reads the same pointer


def test_auto_resume_without_a_complete_checkpoint_stops(work_dir):
    for step in (2, 4):
        _cut(work_dir / f'iter_{step}.pth', 0.5)
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(work_dir)))
    with pytest.raises(ValueError) as error:
        resolve_resume_checkpoint(cfg)
    assert f'the latest checkpoint {work_dir / "iter_4.pth"} (named by ' in str(error.value)
    assert str(error.value).endswith(
        f'and {work_dir} holds no complete checkpoint to resume from instead. Train without '
        '--resume (or delete the damaged file and the pointer first).')


def test_auto_resume_of_a_new_work_dir_starts_from_scratch(tmp_path):
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(tmp_path)))
    assert resolve_resume_checkpoint(cfg) is None


@pytest.mark.parametrize('cut', CUTS)
def test_an_explicit_damaged_checkpoint_stops_naming_it_and_the_good_one(work_dir, cut):
    _cut(work_dir / 'iter_4.pth', cut)
    cfg = Config(dict(resume=True, load_from=str(work_dir / 'iter_4.pth'), work_dir='x'))
    with pytest.raises(ValueError) as error:
        resolve_resume_checkpoint(cfg)
    message = str(error.value)
    assert message.startswith(f'--resume: checkpoint {work_dir / "iter_4.pth"} is damaged: it ')
    assert message.endswith(f'--resume {work_dir / "iter_2.pth"}.')


def test_complete_checkpoints_are_ordered_by_step(work_dir):
    _save(work_dir / 'iter_10.pth', 10)
    (work_dir / 'iter_12.pth').write_bytes(b'')
    assert complete_checkpoints(str(work_dir)) == [
        str(work_dir / f'iter_{step}.pth') for step in (10, 4, 2)]
