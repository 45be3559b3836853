"""What SOURCE holds: one :class:`Entry` per thing the listing saw, and a safe way to read it.

An archive is hostile input. On a local disk the walk (``os.scandir``, no recursion
into symlinks) guarantees that

- it ends, whatever links point where: directory symlinks are never followed (their
  targets inside SOURCE are walked under their own path anyway), and a folder reached
  twice (a bind-mount loop) is walked once;
- nothing outside SOURCE is read: a symlink is followed only to a regular file inside
  SOURCE's real path;
- every entry that is not a plain recording (FIFO, socket, device, dangling or looping
  link, link out of SOURCE or to a folder, unlistable folder) is an :class:`Entry` with a
  ``problem``, which the jobs turn into an error row: ``inputs`` counts what was seen;
- a name that is not UTF-8 is shown with ``\\xNN`` escapes and still read by its bytes.

Object stores (``s3://``, ``gs://``) have no links or special files: their listing is
pyarrow's recursive selector. A recording on a store is read through cough's retries
(cough.tables.storage.retry), and a read that does not give the size the listing saw is
tried again; one the store kept failing to give is an error whose reason starts with
:data:`UNREAD`: a transient error, which the file ledger does not record, so the next run
reads the file again (docs/storage.md).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow.fs as pafs

from ..errors import CoughError, RecordingError

#: Sidecar files that live beside recordings and are not recordings themselves.
SIDECAR_SUFFIXES = (".csv", ".json", ".txt", ".md", ".yaml", ".yml", ".parquet")
#: Columns an entry adds to an archive's rows (besides ``path``).
ENTRY_COLUMNS = ("problem", "open_as", "file_size", "file_mtime_ns")
#: ``file_size``/``file_mtime_ns`` of an entry that could not be looked at (a dangling link, ...).
UNKNOWN = -1
#: How the reason of a transient error begins: a recording the store kept failing to give
#: (503s, resets, answers cut short, a size other than the listing's) through every retry.
UNREAD = "store failure, read again next run: "


def is_unread(reason) -> bool:
    """Whether an ``error`` row's reason is a transient error (:data:`UNREAD`).

    >>> is_unread(UNREAD + "cannot read s3://b/x.mp3: SLOW_DOWN (GetObject) (after 5 attempts)")
    True
    >>> is_unread("cannot decode audio"), is_unread(None)
    (False, False)
    """
    return isinstance(reason, str) and reason.startswith(UNREAD)


@dataclass(frozen=True)
class Entry:
    """One thing under SOURCE.

    ``path`` is what rows show: an absolute path (or a URI in SOURCE's scheme), always
    valid UTF-8. ``problem`` says why it is not a readable recording (None: it is one).
    ``open_as`` is the local path to open, as bytes, when it differs from ``path``: a
    name that had to be escaped, or the target of a symlink. ``file_size`` (bytes) and
    ``file_mtime_ns`` (modification time, ns since the epoch) are what the listing saw
    (:data:`UNKNOWN` when it could not look): with ``path`` they identify one version of a
    file, which is how the file ledger (cough/tables/ledger.py) knows a file it has seen.
    """

    path: str
    problem: str | None = None
    open_as: bytes | None = None
    file_size: int = UNKNOWN
    file_mtime_ns: int = UNKNOWN

    def to_dict(self) -> dict:
        return {"path": self.path, "problem": self.problem, "open_as": self.open_as,
                "file_size": self.file_size, "file_mtime_ns": self.file_mtime_ns}

    @classmethod
    def from_dict(cls, d: dict) -> "Entry":
        """From a row of an archive's frame (missing values may come back as NaN)."""
        problem, open_as = d.get("problem"), d.get("open_as")
        return cls(d["path"], problem if isinstance(problem, str) else None,
                   open_as if isinstance(open_as, bytes) else None,
                   *(_known(d.get(k)) for k in ("file_size", "file_mtime_ns")))

    def read(self, *, max_bytes: int) -> bytes:
        """The file's bytes; :class:`RecordingError` with a reason when it is not a readable
        regular file of at most ``max_bytes``. Locally the file is opened without following
        a link and without blocking, so a FIFO or a link swapped in after listing is refused."""
        if self.problem:
            raise RecordingError(self.problem)
        local = self.open_as or _local_path(self.path)
        if local is None:
            return _read_uri(self.path, max_bytes, self.file_size)
        try:
            fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise RecordingError(f"cannot read file: {reason}") from None
        with open(fd, "rb", closefd=True) as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RecordingError(f"not a regular file ({_kind(st.st_mode)})")
            _check_size(st.st_size, max_bytes)
            try:  # read(n) allocates n bytes up front: ask for the file's size, not the budget
                data = f.read(st.st_size + 1)
                if len(data) > st.st_size:  # growing while we read: at most what the budget allows
                    data += f.read(max_bytes + 1 - len(data))
            except OSError as exc:
                raise RecordingError(f"cannot read file: {exc.strerror or exc}") from None
        _check_size(len(data), max_bytes)
        return data


def list_recordings(source: str) -> list[Entry]:
    """Every entry under ``source`` that may be a recording, sorted by path.

    Hidden names (``.``/``_``) and sidecars (csv, json, txt, ...) are skipped. Every other
    file is a recording whatever its extension (one that is not audio becomes an error row);
    every other thing is an entry with a ``problem``.

    >>> [e.path for e in list_recordings("data/sample/raw")][:1]   # doctest: +SKIP
    ['/abs/data/sample/raw/p01-0.mp3']
    """
    return sorted(list_folder(source)[0], key=lambda e: e.path)


def list_folder(source: str, folder: str | None = None, *, recursive: bool = True) -> tuple[list[Entry], list[str]]:
    """``(entries, subfolders)``: what :func:`list_recordings` sees in ``folder`` (a path or
    URI inside ``source``, given as :func:`list_folder` returned it; None: ``source``
    itself), descending into subfolders when ``recursive``, else returning them to be listed
    on their own (in parallel: cough/tables/archive.py). Entries are unsorted."""
    scheme, root = _split(source)
    if scheme in ("", "file"):
        prefix = "file://" if scheme else ""
        start = root if folder is None else _split(folder)[1] if "://" in folder else folder
        return _walk_local(start, prefix, source, real_root=os.path.realpath(root), recursive=recursive)
    return _walk_store(source, folder, recursive=recursive)


def recording_paths(source: str) -> list[str]:
    """Paths of the readable entries under ``source`` (benchmarks and tools)."""
    return [e.path for e in list_recordings(source) if e.problem is None]


def _split(source: str) -> tuple[str, str]:
    if "://" in source:
        scheme, rest = source.split("://", 1)
        return scheme, (rest if scheme != "file" else "/" + rest.lstrip("/"))
    return "", os.path.abspath(source)


def _local_path(path: str) -> str | None:
    if "://" not in path:
        return path
    scheme, rest = _split(path)
    return rest if scheme == "file" else None


def _shown(path: str, prefix: str) -> tuple[str, bytes | None]:
    """``(path as rows show it, the bytes to open when they differ)``: names the OS gave us
    with undecodable bytes (Python's surrogate escapes) are shown as ``\\xNN``."""
    raw = os.fsencode(path)
    shown = raw.decode("utf-8", "backslashreplace")
    return prefix + shown, (None if shown == path else raw)


def _skipped(name: str) -> bool:
    return name.startswith((".", "_")) or name.lower().endswith(SIDECAR_SUFFIXES)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise RecordingError(f"file is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                             "one recording may use")


def _walk_local(start: str, prefix: str, source: str, *, real_root: str,
                recursive: bool) -> tuple[list[Entry], list[str]]:
    try:
        top = os.stat(start)
    except FileNotFoundError:
        raise CoughError(f"SOURCE {source} does not exist" if start == _split(source)[1]
                         else f"{start} under SOURCE {source} does not exist") from None
    except OSError as exc:
        raise CoughError(f"cannot read SOURCE {source}: {exc.strerror}") from None
    if not stat.S_ISDIR(top.st_mode):
        path, open_as = _shown(start, prefix)
        problem = None if stat.S_ISREG(top.st_mode) else f"not a regular file ({_kind(top.st_mode)})"
        return [Entry(path, problem, open_as, top.st_size, top.st_mtime_ns)], []
    entries: list[Entry] = []
    later: list[str] = []
    seen_dirs = {(top.st_dev, top.st_ino)}
    stack = [start]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except OSError as exc:
            entries.append(_entry(folder, prefix, f"cannot list this folder: {exc.strerror}"))
            continue
        for child in children:
            if child.name.startswith((".", "_")):
                continue
            try:
                if child.is_symlink():
                    if not _skipped(child.name):
                        entries.append(_link(child.path, real_root, prefix))
                elif child.is_dir(follow_symlinks=False):
                    st = child.stat(follow_symlinks=False)
                    if not recursive:
                        later.append(child.path)
                    elif (st.st_dev, st.st_ino) in seen_dirs:
                        entries.append(_entry(child.path, prefix, "folder loop: this folder was already listed "
                                                                  "under another path (not followed)"))
                    else:
                        seen_dirs.add((st.st_dev, st.st_ino))
                        stack.append(child.path)
                elif _skipped(child.name):
                    continue
                else:
                    st = child.stat(follow_symlinks=False)
                    problem = None if stat.S_ISREG(st.st_mode) else f"not a regular file ({_kind(st.st_mode)})"
                    entries.append(_entry(child.path, prefix, problem, st=st))
            except OSError as exc:  # vanished or unreadable while listing
                entries.append(_entry(child.path, prefix, f"cannot read file: {exc.strerror}"))
    return entries, later


def _entry(path: str, prefix: str, problem: str | None = None, open_as: str | None = None,
           st: os.stat_result | None = None) -> Entry:
    shown, raw = _shown(path, prefix)
    if open_as is not None:
        raw = os.fsencode(open_as)
    if st is None:
        return Entry(shown, problem, raw)
    return Entry(shown, problem, raw, st.st_size, st.st_mtime_ns)


def _link(path: str, real_root: str, prefix: str) -> Entry:
    """A symlink under SOURCE: a recording only when it leads to a regular file inside SOURCE."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _entry(path, prefix, "symlink loop (its chain of links never reaches a file)")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return _entry(path, prefix, f"dangling symlink (its target {os.readlink(path)!r} does not exist)")
        return _entry(path, prefix, f"cannot follow symlink: {exc.strerror}")
    target = os.path.realpath(path)
    if os.path.commonpath([real_root, target]) != real_root:
        return _entry(path, prefix, "symlink to a location outside SOURCE (not followed)")
    if stat.S_ISDIR(st.st_mode):
        link_dir = os.path.realpath(os.path.dirname(path))
        if os.path.commonpath([target, link_dir]) == target:
            return _entry(path, prefix, "symlink loop (the link points to a folder that holds it; not followed)")
        return _entry(path, prefix, "symlink to a folder (not followed: the files inside SOURCE are listed "
                                    "under their own paths)")
    if not stat.S_ISREG(st.st_mode):
        return _entry(path, prefix, f"symlink to {_kind(st.st_mode)}, not a regular file")
    return _entry(path, prefix, open_as=target, st=st)


def _walk_store(source: str, folder: str | None, *, recursive: bool) -> tuple[list[Entry], list[str]]:
    from .storage import resolve

    fs, root = resolve(source)
    scheme = source.split("://", 1)[0]
    start = root if folder is None else resolve(folder)[1]
    info = fs.get_file_info(start)
    if info.type == pafs.FileType.NotFound:
        raise CoughError(f"SOURCE {source} does not exist" if folder is None
                         else f"{folder} under SOURCE {source} does not exist")
    if info.type == pafs.FileType.File:
        return [Entry(f"{scheme}://{start}", None, None, info.size, _mtime_ns(info))], []
    entries, later = [], []
    for item in fs.get_file_info(pafs.FileSelector(start, recursive=recursive)):
        rel = PurePosixPath(item.path).relative_to(PurePosixPath(root))
        if any(p.startswith((".", "_")) for p in rel.parts):
            continue
        if item.type == pafs.FileType.Directory:
            if not recursive:
                later.append(f"{scheme}://{item.path}")
            continue
        if _skipped(item.base_name):
            continue
        problem = None if item.type == pafs.FileType.File else "not a regular file"
        entries.append(Entry(f"{scheme}://{item.path}", problem, None,
                             item.size if item.size is not None else UNKNOWN, _mtime_ns(item)))
    return entries, later


def _mtime_ns(info: pafs.FileInfo) -> int:
    """An object's modification time in ns (S3: when it was last written, so a re-upload changes it)."""
    return info.mtime_ns if info.mtime_ns is not None else UNKNOWN


def _known(value) -> int:
    """An int column's value from a row (None or NaN: :data:`UNKNOWN`)."""
    return int(value) if value is not None and value == value else UNKNOWN


def _read_uri(uri: str, max_bytes: int, expected: int = UNKNOWN) -> bytes:
    """A recording on a store: ``expected`` bytes (the listing's size; :data:`UNKNOWN`: the
    size the store gives). A read of another size is tried again (cough.tables.storage.retry),
    and one the store kept failing is a :class:`RecordingError` whose reason starts with
    :data:`UNREAD`."""
    from ..errors import StoreError
    from .storage import Location, Suspect, retry

    if expected != UNKNOWN:
        _check_size(expected, max_bytes)

    def read() -> bytes:
        loc = Location.of(uri)
        with loc.fs.open_input_file(loc.path) as f:
            size = f.size()
            _check_size(size, max_bytes)
            data = f.read(size)
        if len(data) != size or expected not in (UNKNOWN, len(data)):
            raise Suspect(f"read {len(data)} bytes of {uri}, which the "
                          + (f"listing saw as {expected}" if expected != UNKNOWN else f"store said were {size}"))
        return data

    try:
        return retry(read, what=f"read {uri}")
    except StoreError as exc:
        raise RecordingError(UNREAD + str(exc)) from None
    except OSError as exc:
        raise RecordingError(f"cannot read file: {exc.strerror or exc}") from None
    except CoughError as exc:
        raise RecordingError(str(exc)) from None
