"""Local paths and pyarrow-filesystem URIs, and atomic outputs (listing: cough.listing).

Every job reads and writes through these few functions so that ``/data/x``,
``file:///data/x``, ``s3://bucket/x`` and ``gs://bucket/x`` all work the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import Iterator

import pyarrow.fs as pafs

from .errors import CoughError


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
