"""Reading source extracts as streams of all-text Arrow batches, with file and row of origin."""

from __future__ import annotations

import codecs
import csv
import functools
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from . import rejects
from ._errors import SourceError
from .declare import Format, Source
from .rejects import SOURCE_FILE, SOURCE_ROW

__all__ = ["SOURCE_FILE", "SOURCE_ROW", "detect_encoding", "find_files", "read_source"]

BLOCK_SIZE = 1 << 20  # small blocks keep a load's memory low; 8 MB ones bought a little speed for far more
SAMPLE_BYTES = 1 << 20
_JSON_BLANK = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, no other


def find_files(source_dir: Path, source: Source) -> list[Path]:
    """The files matching the source's pattern, in name order; none is an error."""
    if not source_dir.is_dir():
        raise SourceError(f"source folder {source_dir} does not exist; pass --source-dir or set CALLMART_SOURCE_DIR")
    root = source_dir.resolve()
    files = sorted(p for p in source_dir.glob(source.pattern) if p.is_file())
    # Patterns come from declarations, but a file reached through a link must still live in the folder.
    outside = [p for p in files if not p.resolve().is_relative_to(root)]
    if outside:
        raise SourceError(f"{outside[0]} is outside the source folder {source_dir}")
    if not files:
        raise SourceError(f"no file matches {source.pattern} in {source_dir}; add the extract or fix --source-dir")
    return files


def read_source(
    source_dir: Path, source: Source, fields: Sequence[str], problems: list[pa.Table]
) -> Iterator[pa.RecordBatch]:
    """Every row of every matching file as text columns `fields`, plus source_file and source_row.

    Rows that cannot be split into the header's fields, and columns nobody declared, go to `problems`."""
    for path in find_files(source_dir, source):
        if source.format is Format.CSV:
            yield from _read_csv(path, source.encoding, fields, problems)
        else:
            yield from _read_json_array(path, fields)


def detect_encoding(path: Path, declared: str) -> str:
    """The encoding to read a text file with: UTF-8 when its bytes say so (a BOM, or valid multi-byte UTF-8),
    else the declared one. Exports are often re-saved by hand, so a declared latin-1 file may well be UTF-8."""
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head[:4096]:
        raise SourceError(f"{path.name} looks like UTF-16 text; save it as UTF-8 or latin-1 (ISO-8859-1)")
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    try:
        # The sample may end inside a multi-byte character: an incremental decoder waits for the rest.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < SAMPLE_BYTES)
    except UnicodeDecodeError as error:
        if codecs.lookup(declared).name == "utf-8":
            raise _not_utf8(path, head[error.start], error.start, _DECLARE) from None
        return declared
    return "utf-8" if not head.isascii() else declared


_DECLARE = "export it as UTF-8 or declare its encoding"
_ONE_ENCODING = "its start reads as UTF-8: save the whole file in one encoding (UTF-8 or latin-1)"


def _not_utf8(path: Path, byte: int, offset: int, advice: str) -> SourceError:
    """The error of a file read as UTF-8, naming its first byte that is not, and what to do."""
    return SourceError(f"{path.name} is not valid UTF-8 (byte 0x{byte:02x} at offset {offset}); {advice}")


def _first_non_utf8(path: Path, advice: str) -> SourceError | None:
    """The error naming the first byte of a file that is not UTF-8, where the sample read ahead missed it."""
    with path.open("rb") as handle:
        offset, pending = 0, b""
        while True:
            block = handle.read(BLOCK_SIZE * 4)
            data = pending + block
            try:
                _, used = codecs.utf_8_decode(data, "strict", not block)
            except UnicodeDecodeError as error:
                return _not_utf8(path, data[error.start], offset + error.start, advice)
            if not block:
                return None
            offset, pending = offset + used, data[used:]


def _is_ascii(path: Path) -> bool:
    """Whether every byte of the file is ASCII (read in blocks: the check runs at memory speed)."""
    with path.open("rb") as handle:
        while block := handle.read(BLOCK_SIZE * 4):
            if not block.isascii():
                return False
    return True


def _with_origin(batch: pa.RecordBatch, path: Path, lines: pa.Array) -> pa.RecordBatch:
    origin_file = pa.repeat(pa.scalar(path.name, pa.string()), batch.num_rows)
    return pa.RecordBatch.from_arrays(
        [*batch.columns, origin_file, lines], names=[*batch.schema.names, SOURCE_FILE, SOURCE_ROW]
    )


def _csv_header(path: Path, encoding: str) -> list[str]:
    """The header's names as the CSV reader names the columns: untrimmed, without a byte order mark."""
    with path.open("r", encoding=encoding, newline="") as handle:
        first = next(csv.reader(handle), [])
    return [name.lstrip("\ufeff") for name in first]


def _read_csv(path: Path, encoding: str, fields: Sequence[str], problems: list[pa.Table]) -> Iterator[pa.RecordBatch]:
    if path.stat().st_size == 0:
        return
    encoding = detect_encoding(path, encoding)
    if encoding != "utf-8" and _is_ascii(path):
        # ASCII reads the same in any of the exports' encodings, and as UTF-8 the reader need not transcode it.
        encoding = "utf-8"
    raw_header = _csv_header(path, encoding)
    header = [name.strip() for name in raw_header]
    missing = [f for f in fields if f not in header]
    if missing:
        raise SourceError(f"{path.name} lacks the column(s) {', '.join(missing)}; its header is {','.join(header)}")
    repeated = [f for f in fields if header.count(f) > 1]
    if repeated:
        raise SourceError(
            f"{path.name} has the column(s) {', '.join(repeated)} more than once; its header is {','.join(header)}"
        )
    unknown = [name for name in header if name not in fields]
    if unknown:
        problems.append(
            rejects.make([path.name], [1], ",".join(unknown), None, None, "unknown column(s) ignored", rejects.WARNING)
        )
    skipped: set[int] = set()

    def skip(row: pa_csv.InvalidRow) -> str:
        skipped.add(row.number)
        if not row.text.strip():
            return "skip"  # a blank line is no row, but it still counts for the line numbers after it
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        problems.append(rejects.make([path.name], [row.number], None, None, [row.text], reason))
        return "skip"

    # Read columns in the file's order, so that a reject's raw line shows the fields as the line has them; the
    # reader knows them by their untrimmed names, the batches by the trimmed ones.
    read = [i for i, name in enumerate(header) if name in fields]
    # A Python file, not the path: Arrow reads a path's blocks tens of megabytes ahead, memory that a streamed
    # load does not need.
    handle = path.open("rb")
    try:
        reader = pa_csv.open_csv(
            handle,
            read_options=pa_csv.ReadOptions(encoding=encoding, block_size=BLOCK_SIZE, use_threads=False),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=skip, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in raw_header},
                include_columns=[raw_header[i] for i in read],
                strings_can_be_null=False,
            ),
        )
        line = 2  # the header is line 1
        for batch in reader:
            lines, line = _line_numbers(batch.num_rows, line, skipped)
            named = _with_origin(
                pa.RecordBatch.from_arrays(batch.columns, names=[header[i] for i in read]), path, lines
            )
            # Blank lines arrive as rows of empty fields (so the line numbers after them stay right): they hold no data,
            # but are recorded, like any line that cannot be loaded.
            empty = pa.scalar("", pa.string())
            blank = functools.reduce(pc.and_, (pc.equal(column, empty) for column in batch.columns))
            if batch.num_rows and pc.any(blank).as_py():
                problems.append(
                    rejects.make(
                        [path.name] * pc.sum(blank).as_py(),
                        pc.filter(lines, blank),
                        None,
                        None,
                        [""] * pc.sum(blank).as_py(),
                        "blank line (no field has a value)",
                    )
                )
                named = named.filter(pc.invert(blank))
            yield named
    except pa.ArrowInvalid:
        # Read as UTF-8 (by its sample), the file has a byte that is not, past the sample: named as it would be.
        problem = _first_non_utf8(path, _ONE_ENCODING) if encoding == "utf-8" else None
        if problem is None:
            raise
        raise problem from None
    finally:
        handle.close()


def _line_numbers(count: int, first: int, skipped: set[int]) -> tuple[pa.Array, int]:
    """Line numbers of `count` parsed rows from line `first` on, stepping over skipped lines."""
    if not any(first <= s < first + count + len(skipped) for s in skipped):
        ones = pa.repeat(pa.scalar(1, pa.int64()), count)
        return pc.add(pc.cumulative_sum(ones), pa.scalar(first - 1, pa.int64())), first + count
    numbers: list[int] = []
    line = first
    while len(numbers) < count:
        if line not in skipped:
            numbers.append(line)
        line += 1
    return pa.array(numbers, pa.int64()), line


def _read_json_array(path: Path, fields: Sequence[str], block_size: int = BLOCK_SIZE) -> Iterator[pa.RecordBatch]:
    if path.stat().st_size == 0:
        return
    # JSON is UTF-8: a UTF-16 or latin-1 file gets the same one-line error as a CSV would.
    detect_encoding(path, "utf-8")
    as_text = pa.struct([(name, pa.string()) for name in fields])
    row = 1
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for elements, text in _JsonArray(handle, block_size).blocks():
                rows, row = _line_numbers(len(elements), row, set())
                fields_read = _json_texts(elements, text, as_text).flatten()
                yield _with_origin(pa.RecordBatch.from_arrays(fields_read, names=list(fields)), path, rows)
    except UnicodeDecodeError:
        # Past the sample detect_encoding read: named as it would have been.
        raise _first_non_utf8(path, _DECLARE) or SourceError(f"{path.name} is not valid UTF-8") from None
    except (ValueError, OSError):  # a JSONDecodeError is a ValueError
        raise SourceError(f"{path.name} is not a JSON array of objects: {_json_problem(path)}") from None


class _JsonArray:
    """The elements of the JSON array a text file holds, read a block at a time: the document is never whole in
    memory. Numbers are parsed as the text they were written as: every field is read as text."""

    def __init__(self, handle: TextIO, block_size: int = BLOCK_SIZE) -> None:
        self._handle, self._block_size = handle, block_size
        self._decoder = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)
        self._text, self._at, self._ended = "", 0, False

    def blocks(self) -> Iterator[tuple[list[object], str]]:
        """The elements in order, in lists of about a block of text each, with their text as a JSON array."""
        if self._peek() != "[":
            raise ValueError("not an array")
        self._at += 1
        last = self._peek() == "]"
        while not last:
            elements, text, last = self._block()
            yield elements, text
        self._at += 1
        if self._peek():
            raise ValueError("text after the array")

    def _block(self) -> tuple[list[object], str, bool]:
        """The next elements, their text, and whether they end the array. The block's text is parsed in one call
        when it is cut at an element's end: cut at a brace within a string or an inner object, it is not JSON."""
        self._read_ahead(2 * self._block_size)
        start = self._at
        cut = self._text.rfind("}", start, start + self._block_size) + 1
        if cut > start:
            text = "[" + self._text[start:cut] + "]"
            try:
                elements: list[object] = self._decoder.decode(text)
            except json.JSONDecodeError:
                pass
            else:
                self._at = cut
                return elements, text, self._after_element()
        elements, texts, last = [], [], False
        while not last and (not elements or self._at < cut):
            element, text = self._element()
            elements.append(element)
            texts.append(text)
            last = self._after_element()
        return elements, "[" + ",".join(texts) + "]", last

    def _element(self) -> tuple[object, str]:
        """The next element, and its text."""
        while True:
            try:
                start = self._at
                element, self._at = self._decoder.raw_decode(self._text, start)
                return element, self._text[start : self._at]
            except json.JSONDecodeError:
                if self._ended:
                    raise
                self._read_ahead(2 * (len(self._text) - self._at))  # an element longer than what was read

    def _after_element(self) -> bool:
        """Step over the comma after an element; True at the array's closing bracket instead."""
        following = self._peek()
        if following not in (",", "]"):
            raise ValueError("elements not separated by a comma")
        if following == "]":
            return True
        self._at += 1
        self._peek()  # an element is parsed from its first character
        return False

    def _peek(self) -> str:
        """The next character that is not JSON whitespace ("" at the end), the whitespace stepped over."""
        while True:
            self._at = _JSON_BLANK.match(self._text, self._at).end()  # type: ignore[union-attr] # matches "" too
            if self._at < len(self._text) or self._ended:
                return self._text[self._at : self._at + 1]
            self._read_ahead(self._block_size)

    def _read_ahead(self, least: int) -> None:
        """Read on until `least` characters follow the position, or the file ends."""
        while not self._ended and len(self._text) - self._at < least:
            more = self._handle.read(max(self._block_size, least))
            self._text, self._at, self._ended = self._text[self._at :] + more, 0, not more


class _Number(str):
    """A JSON number as written: text for a field, a number within an object or array."""

    __slots__ = ()


def _json_texts(elements: list[object], text: str, as_text: pa.StructType) -> pa.StructArray:
    """JSON objects as text fields: strings and numbers as written, null as null, anything else as its JSON."""
    if None in elements:  # Arrow would take a null for a row of nulls
        raise ValueError("an element is null, not an object")
    try:
        return pa.array(elements, as_text)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        # A field holds true, false, an object or an array: parsed again, the numbers within it stay numbers.
        exact = json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_Number)
        objects = [element for element in exact if isinstance(element, dict)]
        if len(objects) < len(elements):
            raise ValueError("an element is not an object") from None
        names = [field.name for field in as_text]
        return pa.array([{name: _json_field(element.get(name)) for name in names} for element in objects], as_text)


def _json_field(value: object) -> str | None:
    return value if value is None or isinstance(value, str) else _json_text(value)


def _json_text(value: object) -> str:
    """A parsed JSON value written back as compact JSON, its numbers as they were written."""
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json_text(key)}:{_json_text(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _json_problem(path: Path) -> str:
    """Where a JSON file goes wrong, in the words of Python's parser (line and column)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
    except json.JSONDecodeError as error:
        return f"{error.msg} at line {error.lineno}, column {error.colno}"
    if not isinstance(document, list):
        return f"the top level is a JSON {type(document).__name__}, not an array"
    odd = next((i for i, item in enumerate(document) if not isinstance(item, dict)), None)
    return f"element {odd + 1} is not an object" if odd is not None else "it could not be read"
