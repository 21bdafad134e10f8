"""tools/misc/bad_files_table.py: every bad-file case runs through nat_mm's real code
and lands in the document's table."""
import pytest


@pytest.fixture(scope='module')
def table(load_tool, tmp_path_factory):
    tool = load_tool('misc/bad_files_table')
    document = tmp_path_factory.mktemp('doc') / 'reliability.md'
    document.write_text(f'# Title\n\nbefore\n{tool.BEGIN}\nold table\n{tool.END}\nafter\n')
    rows = tool.main(['--write', str(document)])
    return tool, rows, document.read_text()


def test_every_case_is_a_row_of_the_document(table):
    tool, rows, text = table
    assert text.startswith(f'# Title\n\nbefore\n{tool.BEGIN}\n| case | checked by | result |')
    assert text.endswith(f'|\n{tool.END}\nafter\n') and 'old table' not in text
    assert text.count('\n| ') == len(rows) + 1           # the header and one line per case
    cases = [row[0] for row in rows]
    for expected in ('a JPEG image cut short', 'a COCO annotation JSON cut short',
                     'the latest checkpoint cut short', 'a Swin state dict',
                     'a NAT without rpb', 'safetensors', 'does not exist'):
        assert any(expected in case for case in cases), expected


def test_dataset_and_resume_cases_are_stopped_by_the_preflight(table):
    _, rows, _ = table
    checked = [row for row in rows if row[0].startswith(('dataset:', '--resume'))]
    assert len(checked) == 10
    for case, checked_by, outcome, raised_in, message in checked:
        module = 'nat_mm.launch.resume' if case.startswith('--resume') else 'nat_mm.launch.datasets'
        assert (checked_by, raised_in) == ('preflight', module), case
        assert '<tmp>/' in message, case                     # the file is named
        if case.startswith('--resume:'):                     # auto resume falls back
            assert outcome == 'warning, continues', case
            assert 'resuming from the latest complete checkpoint' in message, case
        else:
            assert outcome == 'error' and message.startswith('ValueError: '), case


def test_a_document_without_markers_is_refused(load_tool, tmp_path):
    tool = load_tool('misc/bad_files_table')
    document = tmp_path / 'doc.md'
    document.write_text('# no markers\n')
    with pytest.raises(ValueError) as error:
        tool.write_into(document, '| table |')
    assert str(error.value) == (f'{document} has no table markers; add the lines\n{tool.BEGIN}\n'
                                f'{tool.END}\nwhere the table goes')
