"""Local paths and pyarrow-filesystem URIs, listing, and atomic outputs.

Every job reads and writes through these few functions so that ``/data/x``,
``file:///data/x``, ``s3://bucket/x`` and ``gs://bucket/x`` all work the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import PurePosixPath
from typing import Iterator

import pyarrow.fs as pafs

from .errors import CoughError

#: Sidecar files that live beside recordings and are not recordings themselves.
SIDECAR_SUFFIXES = (".csv", ".json", ".txt", ".md", ".yaml", ".yml", ".parquet")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path or a URI pyarrow understands."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except Exception as exc:
            raise CoughError(f"cannot open {uri}: {exc}") from None
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def open_input(uri: str):
    fs, path = resolve(uri)
    return fs.open_input_stream(path)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def list_recordings(source: str) -> list[str]:
    """Every recording under ``source``, recursively, sorted: absolute paths (or URIs of
    ``source``'s scheme), so that workers with another working directory find them.

    Hidden files and sidecars (csv, json, txt, ...) are not recordings. Everything
    else is, whatever its extension: a file that is not audio becomes an error row.
    """
    fs, root = resolve(source)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise CoughError(f"SOURCE {source} does not exist")
    if info.type == pafs.FileType.File:
        return [_like(source, root)]
    selector = pafs.FileSelector(root, recursive=True)
    found = []
    for entry in fs.get_file_info(selector):
        rel = PurePosixPath(entry.path).relative_to(PurePosixPath(root))
        if entry.type != pafs.FileType.File or any(p.startswith((".", "_")) for p in rel.parts):
            continue
        if entry.path.lower().endswith(SIDECAR_SUFFIXES):
            continue
        found.append(_like(source, entry.path))
    return sorted(found)


def write_json(uri: str, obj) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    fs, path = resolve(uri)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())
    fs.move(tmp, path)


def read_json(uri: str):
    with open_input(uri) as f:
        return json.loads(f.read())


@contextlib.contextmanager
def atomic_dir(out: str) -> Iterator[str]:
    """Build a directory aside and swap it in as ``out`` only when the block succeeds.

    A crash leaves ``out`` as it was (absent, or the previous complete run) plus a
    hidden ``.name.tmp-*`` folder; a rerun replaces ``out`` whole.
    """
    fs, path = resolve(out)
    parent, name = os.path.split(path.rstrip("/"))
    try:
        fs.create_dir(parent, recursive=True)
        staging = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
        fs.create_dir(staging)
    except OSError as exc:
        raise CoughError(f"cannot write {out}: {exc.strerror or exc}") from None
    staging_uri = _like(out, staging)
    try:
        yield staging_uri
    except BaseException:
        fs.delete_dir(staging)
        raise
    old = None
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        old = f"{parent}/.{name}.old-{uuid.uuid4().hex[:12]}"
        fs.move(path, old)
    fs.move(staging, path)
    if old:
        fs.delete_dir(old)


def _like(template: str, path: str) -> str:
    """``path`` written in the same scheme as ``template``."""
    if "://" in template:
        scheme = template.split("://", 1)[0]
        return f"{scheme}://{path}"
    return path
