"""Reading a JSON array of objects a block at a time gives the fields Python's parser gives for the whole document."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callmart import SourceError, extract

FIELDS = ["callid", "customerid", "logindate", "channel"]
# Braces, brackets and commas inside strings put a block's last brace where no element ends.
TEXTS = st.text(alphabet=st.sampled_from(list('ab"\\}],{[ é\n\t/') + ["\u2028", "\x00"]), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXTS
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3))
OBJECTS = st.dictionaries(st.sampled_from([*FIELDS, "nota", "CallID"]) | TEXTS, VALUES, max_size=6)


def as_text(value: object) -> str | None:
    """A field as read: text as it is, null as null, anything else as its compact JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def read(path: Path, block_size: int) -> list[dict[str, object]]:
    return [row for batch in extract._read_json_array(path, FIELDS, block_size) for row in batch.to_pylist()]


@settings(max_examples=300, deadline=None)
@given(
    elements=st.lists(OBJECTS, max_size=25),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
    block_size=st.integers(1, 300),
)
def test_a_json_array_read_in_blocks_gives_every_object_as_parsed_whole(
    tmp_path_factory: pytest.TempPathFactory,
    elements: list[dict[str, object]],
    indent: int | None,
    ascii_only: bool,
    block_size: int,
) -> None:
    path = tmp_path_factory.mktemp("json") / "logins_t.json"
    path.write_text(json.dumps(elements, indent=indent, ensure_ascii=ascii_only), encoding="utf-8")

    expected = [
        {**{name: as_text(element.get(name)) for name in FIELDS}, "source_file": path.name, "source_row": row}
        for row, element in enumerate(elements, start=1)
    ]
    assert read(path, block_size) == expected


@settings(max_examples=200, deadline=None)
@given(elements=st.lists(OBJECTS, min_size=1, max_size=8), data=st.data())
def test_a_json_array_cut_short_is_one_error_with_where_it_breaks(
    tmp_path_factory: pytest.TempPathFactory, elements: list[dict[str, object]], data: st.DataObject
) -> None:
    document = json.dumps(elements, indent=2)
    cut = data.draw(st.integers(1, len(document.rstrip()) - 1))
    path = tmp_path_factory.mktemp("json") / "logins_t.json"
    path.write_text(document[:cut], encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as parsed:
        json.loads(document[:cut])
    where = f"at line {parsed.value.lineno}, column {parsed.value.colno}"

    with pytest.raises(SourceError, match=f"^logins_t.json is not a JSON array of objects: .* {where}$"):
        read(path, data.draw(st.integers(1, 64)))


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ('{"callid": 1}', "the top level is a JSON dict, not an array"),
        ('[{"callid": 1}, 7]', "element 2 is not an object"),
        ('[{"callid": 1}, null]', "element 2 is not an object"),
        ('[{"callid": 1},]', "Expecting value at line 1, column 16"),
        ('[{"callid": 1} {"callid": 2}]', "Expecting ',' delimiter at line 1, column 16"),
        ('[{"callid": 1}] []', "Extra data at line 1, column 17"),
        ('[{"callid": "}, {"}', "Expecting ',' delimiter at line 1, column 20"),
    ],
)
@pytest.mark.parametrize("block_size", [1, 8, 1 << 20])
def test_a_json_document_that_is_no_array_of_objects_is_one_error(
    tmp_path: Path, document: str, problem: str, block_size: int
) -> None:
    path = tmp_path / "logins_t.json"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(SourceError) as raised:
        read(path, block_size)
    assert str(raised.value) == f"logins_t.json is not a JSON array of objects: {problem}"


def test_a_json_number_is_read_as_written(tmp_path: Path) -> None:
    # Whole numbers are checked by the cleaning rules, which see what the export wrote, 1.0 or 1e3 included.
    path = tmp_path / "logins_t.json"
    path.write_text('[{"callid": 1.50, "customerid": 1e3, "logindate": -0, "channel": {"a": [1, 2.0, true]}}]')
    assert read(path, 1 << 20)[0] == {
        "callid": "1.50",
        "customerid": "1e3",
        "logindate": "-0",
        "channel": '{"a":[1,2.0,true]}',
        "source_file": "logins_t.json",
        "source_row": 1,
    }


def test_a_large_json_array_is_read_in_batches_of_about_a_block(tmp_path: Path) -> None:
    path = tmp_path / "logins_t.json"
    path.write_text(json.dumps([{"callid": n, "logindate": "3/4/2024 9:30:00"} for n in range(5000)], indent=2))
    batches = list(extract._read_json_array(path, FIELDS, block_size=4096))
    assert len(batches) > 10
    assert pa.Table.from_batches(batches).column("callid").to_pylist() == [str(n) for n in range(5000)]
