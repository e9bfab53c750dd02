"""A backfill reads its extract once: as the extract streams by, the raw rows of each pending period are set apart
in temporary files, and each period's load then reads its own rows instead of the whole extract again."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .clean import clean_values
from .declare import Column, Fact
from .extract import read_source
from .stage import RawRows, source_fields, staged_columns
from .streams import prefetched

try:
    import fcntl
except ImportError:  # Windows: folders of killed runs stay until the system cleans its temporary folder
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FOLDER_PREFIX",
    "CLAIMED_PERIODS",
    "SPAN_ROWS",
    "MAX_PERIODS",
    "Backfill",
    "PeriodSplit",
    "remove_abandoned",
    "span_sizes",
    "split_by_period",
]

Period = tuple[datetime, datetime]
Slice = tuple[Path, int, int, int]
"""Rows of a split's file: the file, the batch in it, the first row's place in that batch, and how many."""

MAX_PERIODS = 400
"""Most periods one extract is split among (a file is open for each while it is read); the periods after them
split it again once reached."""

CLAIMED_PERIODS = 366
"""Most consecutive pending periods a run claims at once, to load as spans (no more than one split holds)."""

SPAN_ROWS = 500_000
"""Most rows of the periods a run loads as one span (one transaction), unless one period alone has more: a span
that fails is loaded again one period at a time, so a larger one would cost more to retry than it saves, and a
span's keys of inferred members, row hashes and minute counters grow with its rows."""

SPLIT_HELD_BYTES = 8 << 20
"""Most bytes of rows a split holds in memory before writing them to its files (ordering them by period takes as
much again, for a moment)."""

BATCH_ROWS = 16_384
"""Rows per batch read back: an extract not in date order leaves each period its rows in slivers."""

FILE_ROWS = 2048
"""Fewest rows of a batch of a split's file (unless its flush holds fewer): the rows of consecutive periods share a
batch, since a batch per period per flush cost more to write and read than its few rows. Reading periods keeps a
batch of each flush in memory (a period has rows in each), so larger batches would hold more for little."""

FOLDER_PREFIX = "callmart-backfill-"
"""Name prefix of a run's folder of split extracts, in the system's temporary folder."""

OWNER_LOCK = "owner.lock"
"""A file in that folder which its run keeps locked while it lives: the system releases the lock of a killed run."""

# Uncompressed: the rows are read back once, soon, likely from the system's cache, and compressing them took longer
# than the writing it saved; the files take about half as much again as the extract, and go as periods load.
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)
_EPOCH = datetime(1970, 1, 1)


class PeriodSplit:
    """One extract's raw rows, set apart per period in a folder; the rows without a readable date go with every
    period, which reports them as no period's, as when each period reads the whole extract."""

    def __init__(self, folder: Path, periods: Sequence[Period]) -> None:
        self.folder = folder
        self.periods = list(periods)
        self.problems: list[pa.Table] = []
        self.parts: dict[int | None, list[Slice]] = {}
        """Where each period's rows are (None: rows without a date), in the extract's order."""
        self.latest: datetime | None = None
        """The latest time among all the extract's rows, in any period or none."""
        self.rows = np.zeros(len(self.periods), np.int64)
        """Rows set apart, by period."""
        self._uses: Counter[Path] = Counter()
        self._files = 0

    def rows_in(self, period: Period) -> int:
        """The rows set apart for a period of the split."""
        return int(self.rows[self.periods.index(period)])

    def new_file(self) -> Path:
        """The path of a new file of the split."""
        self._files += 1
        return self.folder / f"{self._files}.arrow"

    def add_rows(self, index: int | None, where: Slice) -> None:
        """Rows of period `index` (None: rows without a date), after those it has."""
        self.parts.setdefault(index, []).append(where)
        self._uses[where[0]] += 1

    def rows_of(self, periods: Sequence[Period]) -> RawRows | None:
        """The raw rows of consecutive `periods`, each period's apart from the next, then the undated ones; None
        if the split does not cover one of them. They stay on disk until `release`d."""
        if any(period not in self.periods for period in periods):
            return None
        indexes = [self.periods.index(period) for period in periods]

        def raw_rows(problems: list[pa.Table]) -> Iterator[pa.RecordBatch]:
            problems.extend(self.problems)
            wanted = [*(self.parts.get(index, []) for index in indexes), self.parts.get(None, [])]
            files = _OpenFiles(where for slices in wanted for where in slices)
            # Each period's batches as it would read them alone, small ones then joined: a batch per small day
            # would cost more than its rows, and a batch never splits a period's batch (inferred members get
            # their keys batch by batch, the same as period by period).
            alone = (_coalesced(files.read(slices)) for slices in wanted[:-1])
            yield from _joined_whole(batch for batches in alone for batch in batches)
            yield from _coalesced(files.read(wanted[-1]))

        return raw_rows

    def release(self, periods: Sequence[Period]) -> None:
        """Remove the rows of periods now loaded: the disk they took goes back while the backfill goes on."""
        for period in periods:
            if period in self.periods:
                for path, _, _, _ in self.parts.pop(self.periods.index(period), []):
                    self._uses[path] -= 1
                    if not self._uses[path]:
                        path.unlink(missing_ok=True)


def split_by_period(
    source_dir: Path,
    fact: Fact,
    periods: Sequence[Period],
    folder: Path,
    on_rows: Callable[[int], None] | None = None,
) -> PeriodSplit:
    """Read the fact's extract once, writing the raw rows of each of `periods` (which must not overlap) apart.

    A row belongs to the period its time column falls in, cleaned as the load cleans it, so each period gets
    exactly the rows it would keep from the whole extract, in the extract's order."""
    if _overlapping(periods):
        raise ValueError("periods to split an extract among must not overlap")
    split = PeriodSplit(folder, sorted(periods))
    starts = np.array([_seconds(start) for start, _ in split.periods], np.int64)
    ends = np.array([_seconds(end) for _, end in split.periods], np.int64)
    time_column = next(c for c in staged_columns(fact) if c.name == fact.time_column)
    files = _SplitFiles(split)
    batches = read_source(source_dir, fact.source, source_fields(fact), split.problems)
    # Reading and dating the next rows (Arrow's work, without the GIL) overlaps the writing of these.
    for batch, when in prefetched(_dated(batches, time_column)):
        if on_rows is not None:
            on_rows(batch.num_rows)
        dated = pc.is_valid(when).to_numpy(zero_copy_only=False)
        latest = pc.max(when).as_py()
        if latest is not None and (split.latest is None or latest > split.latest):
            split.latest = latest
        seconds = pc.fill_null(pc.cast(when, pa.int64()), 0).to_numpy(zero_copy_only=False)
        place = np.searchsorted(starts, seconds, side="right") - 1
        inside = dated & (place >= 0) & (seconds < ends[np.maximum(place, 0)])
        split.rows += np.bincount(place[inside], minlength=len(split.periods))
        files.add(batch.filter(pa.array(inside)), place[inside])
        if not dated.all():
            files.add_undated(batch.filter(pa.array(~dated)))
    files.flush()
    return split


def _dated(batches: Iterable[pa.RecordBatch], time_column: Column) -> Iterator[tuple[pa.RecordBatch, pa.Array]]:
    """Each batch with its rows' times, cleaned as the load cleans them (null where unreadable)."""
    for batch in batches:
        yield batch, clean_values(batch.column(time_column.source or time_column.name), time_column)


class _SplitFiles:
    """The files of a split being made: rows held in memory, SPLIT_HELD_BYTES at most, then ordered by period and
    written in files of consecutive periods' rows (FILE_ROWS or more each)."""

    def __init__(self, split: PeriodSplit) -> None:
        self.split = split
        self.held: list[tuple[pa.RecordBatch, np.ndarray]] = []
        self.undated: list[pa.RecordBatch] = []
        self.bytes = 0

    def add(self, rows: pa.RecordBatch, places: np.ndarray) -> None:
        """Rows of the extract, in its order, with the index of each one's period."""
        # A file's columns come in its header's order (a reject shows the line as written): rows of another
        # order go to files of their own.
        if not rows.num_rows:
            return
        if self.held and self.held[0][0].schema != rows.schema:
            self.flush()
        self.held.append((rows, places))
        self._count(rows)

    def add_undated(self, rows: pa.RecordBatch) -> None:
        """Rows of the extract without a readable time, in its order."""
        if self.undated and self.undated[0].schema != rows.schema:
            self.flush()
        self.undated.append(rows)
        self._count(rows)

    def flush(self) -> None:
        """Write the rows held."""
        held, undated = self.held, self.undated
        self.held, self.undated, self.bytes = [], [], 0
        if held:
            schema = held[0][0].schema
            columns = [[batch.column(i) for batch, _ in held] for i in range(len(schema))]
            places = np.concatenate([places for _, places in held])
            del held
            # A stable sort by period keeps each period's rows in the extract's order. Each column's rows go once
            # taken in that order: the flush holds its rows about once, not twice.
            order = np.argsort(places, kind="stable")
            taken = pa.array(order)
            ordered = []
            for i, chunks in enumerate(columns):
                ordered.append(pa.concat_arrays(chunks).take(taken))
                columns[i] = []
            self._write(pa.RecordBatch.from_arrays(ordered, schema=schema), places[order])
        if undated:
            rows = _joined(undated)
            path = self.split.new_file()
            with pa.ipc.new_file(str(path), rows.schema, options=_WRITE_OPTIONS) as writer:
                writer.write_batch(rows)
            self.split.add_rows(None, (path, 0, 0, rows.num_rows))

    def _write(self, rows: pa.RecordBatch, places: np.ndarray) -> None:
        """Rows ordered by period, written in one file, in batches of whole periods' rows, FILE_ROWS or more in
        each: one file per flush, since a file costs more to create than a batch to write."""
        cuts = [0, *(np.flatnonzero(np.diff(places)) + 1).tolist(), len(places)]
        path = self.split.new_file()
        with pa.ipc.new_file(str(path), rows.schema, options=_WRITE_OPTIONS) as writer:
            first = 0
            for at, cut in enumerate(cuts[1:], start=1):
                if cut - cuts[first] < FILE_ROWS and cut < len(places):
                    continue
                begin = cuts[first]
                writer.write_batch(rows.slice(begin, cut - begin))
                for low, high in zip(cuts[first:at], cuts[first + 1 : at + 1], strict=True):
                    self.split.add_rows(
                        int(places[low]), (path, writer.stats.num_record_batches - 1, low - begin, high - low)
                    )
                first = at

    def _count(self, rows: pa.RecordBatch) -> None:
        self.bytes += rows.nbytes
        if self.bytes > SPLIT_HELD_BYTES:
            self.flush()


class _OpenFiles:
    """The batches of the files holding the slices of rows one read goes through, each batch read once and kept
    until its last slice."""

    def __init__(self, slices: Iterable[Slice]) -> None:
        self.uses = Counter((path, batch) for path, batch, _, _ in slices)
        self.open: dict[tuple[Path, int], pa.RecordBatch] = {}

    def read(self, slices: Iterable[Slice]) -> Iterator[pa.RecordBatch]:
        """The rows of each slice, in turn."""
        for path, batch, offset, length in slices:
            where = (path, batch)
            rows = self.open.get(where)
            if rows is None:
                with pa.OSFile(str(path)) as handle, pa.ipc.open_file(handle) as reader:
                    rows = self.open[where] = reader.get_batch(batch)
            self.uses[where] -= 1
            if not self.uses[where]:
                del self.open[where]
            yield rows.slice(offset, length)


class Backfill:
    """The splits of a run: for each fact, its extract split among the periods pending when the run loads its
    first period, if there are several; kept in a temporary folder removed when the run ends, or by the next run
    if this one is killed."""

    def __init__(self, source_dir: Path) -> None:
        self.source_dir = source_dir
        self._splits: dict[str, PeriodSplit | None] = {}
        self._made = 0
        self._folder: Path | None = None
        self._owner: int | None = None

    def __enter__(self) -> Backfill:
        remove_abandoned(Path(tempfile.gettempdir()))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None

    def rows_of(
        self,
        fact: Fact,
        periods: Sequence[Period],
        pending: Callable[[], list[Period]],
        on_rows: Callable[[int], None] | None = None,
    ) -> RawRows | None:
        """The rows of consecutive `periods` from the split of their extract, splitting it first among them and
        the `pending` ones if the fact has no split of them yet and there are several; None where the periods
        read the extract themselves."""
        # A split that failed leaves every period to read the extract, and report its error.
        made = self._splits.get(fact.name)
        if fact.name not in self._splits or (made is not None and made.rows_of(periods) is None):
            wanted = [*periods, *(p for p in pending() if p not in periods)]
            self._splits[fact.name] = None
            if made is not None:
                shutil.rmtree(made.folder, ignore_errors=True)
            if len(wanted) > 1 and len(periods) <= MAX_PERIODS and not _overlapping(wanted):
                try:
                    folder = self._make_folder() / f"{fact.name}-{self._made}"
                    self._made += 1
                    folder.mkdir()
                    self._splits[fact.name] = split_by_period(
                        self.source_dir, fact, wanted[:MAX_PERIODS], folder, on_rows
                    )
                except OSError:
                    # No room or no right to write the temporary files (or to read the extract): each period
                    # reads the extract itself, as it would without a split, and meets any reading error there.
                    self._splits[fact.name] = None
        split = self._splits[fact.name]
        return None if split is None else split.rows_of(periods)

    def release(self, fact: Fact, periods: Sequence[Period]) -> None:
        """The periods are loaded (or failed): their rows set apart are not read again."""
        split = self._splits.get(fact.name)
        if split is not None:
            split.release(periods)

    def split_of(self, fact: Fact) -> PeriodSplit | None:
        """The fact's split, once made (None where each period reads the extract itself)."""
        return self._splits.get(fact.name)

    def _make_folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
            self._owner = _lock(self._folder / OWNER_LOCK, create=True)
        return self._folder


def span_sizes(rows: Sequence[int]) -> list[int]:
    """How many consecutive periods each span takes, given each period's rows: as many as fit in SPAN_ROWS (at
    least one)."""
    sizes: list[int] = []
    held = 0
    for count in rows:
        if sizes and held + count <= SPAN_ROWS:
            sizes[-1] += 1
            held += count
        else:
            sizes.append(1)
            held = count
    return sizes


def remove_abandoned(temporary: Path) -> list[Path]:
    """Remove the split folders that killed runs left in `temporary` (their owner lock is free); return them.
    A folder without its lock file yet is being made, and stays."""
    removed = []
    for folder in temporary.glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = _lock(folder / OWNER_LOCK, create=False)
        except OSError:
            continue
        if owner is None:
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(owner)
    return removed


def _lock(path: Path, create: bool) -> int | None:
    """A descriptor of `path` holding its exclusive lock, or None where another process holds it (or where the
    system has no such locks). Raises OSError when the file is missing and not to be created."""
    if fcntl is None:
        return None
    handle = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    return handle


def _overlapping(periods: Iterable[Period]) -> bool:
    ordered = sorted(periods)
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:], strict=False))


def _seconds(moment: datetime) -> int:
    """Seconds since 1970 of a naive timestamp, as Arrow counts a timestamp[s]."""
    return int((moment - _EPOCH).total_seconds())


def _coalesced(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Consecutive batches of one layout joined into batches of at least BATCH_ROWS rows, or what is left."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if pending and batch.schema != pending[0].schema:
            yield _joined(pending)
            pending, rows = [], 0
        pending.append(batch)
        rows += batch.num_rows
        if rows >= BATCH_ROWS:
            yield _joined(pending)
            pending, rows = [], 0
    if pending:
        yield _joined(pending)


def _joined_whole(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Consecutive batches of one layout joined, whole, into batches of at most BATCH_ROWS rows (or one larger
    batch alone)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if pending and (rows + batch.num_rows > BATCH_ROWS or batch.schema != pending[0].schema):
            yield _joined(pending)
            pending, rows = [], 0
        pending.append(batch)
        rows += batch.num_rows
    if pending:
        yield _joined(pending)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)
