"""Featurize: decode every recording under SOURCE and write OUT, Parquet shards of mel
images committed by its manifest (cough/tables/shards.py says the layout).

:func:`featurize` checks OUT (new, empty, or an earlier featurize output), lists the
archive, attaches labels, maps batches of recordings through
:func:`cough.featurize.batch.featurize_batch` on Ray Data (each writes one shard per table under a
new version folder), sums the per-batch counts, and commits by writing the manifest last;
then it deletes the version it replaced. cough/commands/featurize.py parses the flags.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal, overload

from .. import __version__
from ..errors import CoughError
from ..tables.archive import Listing, Selection
from ..tables.labels import LabelIndex
from ..tables.storage import Output
from .settings import FeaturizePlan, FeaturizeSettings, FeaturizeSummary

log = logging.getLogger("cough.featurize")


def plan(listing: Listing, output: Output, warnings: list[str]) -> FeaturizePlan:
    """What featurizing ``listing`` (:func:`cough.tables.archive.listing_table`) into
    ``output`` (what :func:`cough.tables.storage.claim` gave) would do."""
    import os
    from collections import Counter

    rows = listing.rows
    formats = Counter(os.path.splitext(p)[1].lstrip(".").lower() or "none" for p in rows.column("path").to_pylist())
    return FeaturizePlan(would_read=rows.num_rows, excluded=listing.excluded, formats=dict(sorted(formats.items())),
                         labels=listing.counts.to_dict(), warnings=warnings,
                         would_write=output.loc.uri, would_replace=output.state == "ours")


def list_work(source: str, index: LabelIndex, selection: Selection, batch_size: int):
    """``(dataset, listing, batch_size)``: SOURCE listed in Ray tasks
    (:func:`cough.tables.archive.listing_dataset`, labels attached from ``index``, files
    ``selection`` leaves out counted) and cut into batches, in at most
    :data:`cough.tables.archive.MAX_BLOCKS` blocks; the driver holds object references, not
    the listing. Call after Ray is up."""
    from ..tables.archive import in_batches, listing_dataset

    listing = listing_dataset(source, index, selection=selection)
    rows = listing.rows.materialize()
    listed = rows.count()
    if listed == 0:
        raise CoughError(f"SOURCE {source} holds no recordings"
                         + (f" that --include/--exclude keep ({listing.excluded} left out)" if listing.excluded else ""))
    ds, batch_size = in_batches(rows, listed, batch_size)
    return ds, Listing(rows, listing.counts), batch_size


@overload
def featurize(source: str, out: str, settings: FeaturizeSettings | None = None, *,
              dry_run: Literal[False] = False) -> FeaturizeSummary: ...


@overload
def featurize(source: str, out: str, settings: FeaturizeSettings | None = None, *,
              dry_run: Literal[True]) -> FeaturizePlan: ...


def featurize(source: str, out: str, settings: FeaturizeSettings | None = None, *,
              dry_run: bool = False) -> FeaturizeSummary | FeaturizePlan:
    """Featurize every recording under ``source`` into ``out`` as ``settings`` say; readers
    of ``out`` see the previous complete output until this one commits. Returns the run's
    summary (:meth:`FeaturizeSummary.to_dict` is the job's JSON), or with ``dry_run`` only
    the plan (:func:`plan`).

    Joins Ray at ``settings.address`` or starts a local instance, unless Ray is already up.

    >>> featurize("data/sample/raw", "out/features").to_dict()   # doctest: +SKIP
    {'inputs': 60, 'ok': 60, 'errors': 0, 'rejected': 0, 'excluded': 0, 'images': 64, ...}
    """
    from ..audio.decode import TASK_MEMORY
    from ..audio.detector import fingerprint
    from ..runtime import TaskGate, init_ray
    from ..tables.archive import listing_table
    from ..tables.artifacts import Manifest
    from ..tables.labels import load_labels
    from ..tables.listing import UNREAD
    from ..tables.shards import KIND, MANIFEST_FILE, TABLES
    from ..tables.storage import Location, claim, new_version, remove_stale
    from .batch import COUNTS, featurize_batch

    s = settings or FeaturizeSettings()
    source_loc = Location.of(source)
    output = claim(out, KIND, inputs={"SOURCE": source_loc})
    if not source_loc.exists():  # found before Ray starts, as every problem with the job's inputs
        raise CoughError(f"SOURCE {source_loc.uri} does not exist")
    index = load_labels(s.labels, source_loc.uri, group_pattern=s.group_pattern)  # usage errors before Ray starts
    metadata_columns = index.metadata_columns
    if dry_run:
        listing = listing_table(source_loc.uri, index, selection=s.selection)
        if listing.rows.num_rows == 0:
            raise CoughError(f"SOURCE {source_loc.uri} holds no recordings")
        return plan(listing, output, listing.check(s.labels, s.group_pattern))
    labels_uri = Location.of(s.labels).uri if s.labels else None
    # the labels CSV is read here, by the driver alone (load_labels above): it may be local anywhere
    init_ray(s.address, num_cpus=s.num_cpus, paths={"SOURCE": source_loc.uri, "--out": output.loc.uri},
             shared_paths=s.shared_paths)
    ds, listing, batch_size = list_work(source_loc.uri, index, s.selection, s.batch_size)
    warnings = listing.check(s.labels, s.group_pattern)
    listed = listing.rows.count()
    log.info("featurizing %d recordings from %s%s", listed, source_loc.uri,
             f" ({listing.excluded} left out by --include/--exclude)" if listing.excluded else "")
    version = new_version()
    # a failed run stops its writing tasks (the gate) before it cleans up
    with TaskGate() as gate, output.writing(MANIFEST_FILE, settle=gate.settle) as loc:
        # One operator, nothing downstream to reserve CPUs for: Ray Data's reservation
        # held one of two CPUs idle at times (164 -> 205 files/s without it, 4 runs each).
        ds.context.op_resource_reservation_enabled = False
        folders = {t: loc.join(t, version) for t in TABLES}
        counts = ds.map_batches(featurize_batch, batch_size=batch_size, batch_format="pyarrow", memory=TASK_MEMORY,
                                fn_kwargs={**folders, "source": source_loc.uri, "params": s.params,
                                           "metadata_columns": metadata_columns,
                                           "min_cough_probability": s.min_cough_probability, "gate": gate.actor})
        totals = dict.fromkeys(COUNTS, 0)
        failed = None  # one error row's path and reason
        for batch in counts.iter_batches(batch_size=None, batch_format="pyarrow"):
            for key in totals:
                totals[key] += sum(batch.column(key).to_pylist())
            failed = failed or next((f for f in batch.column("failed").to_pylist() if f), None)
        if totals["inputs"] != listed:
            raise CoughError(f"lost recordings: {listed} listed, {totals['inputs']} processed")
        summary = FeaturizeSummary(**{**totals, "inputs": totals["inputs"] + listing.excluded},
                                   excluded=listing.excluded, labels=listing.counts.to_dict(), warnings=warnings,
                                   out=output.loc.uri, featurizer_version=s.params.version)
        if totals["errors"] and not totals["ok"] + totals["rejected"]:  # whatever the cause: not one file read
            raise CoughError(f"every one of the {listed} files listed under SOURCE {source_loc.uri} failed (e.g. "
                             f"{failed}); nothing was committed{' (OUT keeps its previous output)' if output.state == 'ours' else ''}",
                             summary=summary.to_dict())
        manifest = Manifest(inputs=summary.inputs, ok=summary.ok, errors=summary.errors, unread=summary.unread,
                            rejected=summary.rejected,
                            excluded=summary.excluded, images=summary.images, coughs=summary.coughs,
                            dropped_windows=summary.dropped_windows, kind=KIND, version=version,
                            tables={t: f"{t}/{version}" for t in TABLES}, source=source_loc.uri, labels=labels_uri,
                            group_pattern=s.group_pattern, include=list(s.selection.include),
                            exclude=list(s.selection.exclude), min_cough_probability=s.min_cough_probability,
                            detector=fingerprint(), featurizer=s.params.to_dict(),
                            featurizer_version=s.params.version, metadata_columns=metadata_columns,
                            cough_version=__version__, created_at=dt.datetime.now(dt.timezone.utc).isoformat())
        loc.join(MANIFEST_FILE).write_json(manifest.to_dict())  # the commit point
    for table in TABLES:  # the version this run replaced, and any a crashed run left
        remove_stale(loc.join(table), {version})
    read = summary.ok + summary.errors + summary.rejected
    if s.max_error_rate is not None and summary.errors > s.max_error_rate * read:
        raise CoughError(f"{summary.errors / read:.1%} of the {read} files read failed, over --max-error-rate "
                         f"{s.max_error_rate:g} (committed all the same; e.g. {failed}); their reasons are in "
                         f"{output.loc.uri}/recordings (status == 'error')", summary=summary.to_dict())
    if summary.errors:
        log.warning("%d of %d recordings could not be featurized; their reasons are in %s/recordings "
                    "(status == 'error')", summary.errors, summary.inputs, out)
    if summary.unread:
        log.warning("%d of them could not be read because the store kept failing (reasons starting %r): "
                    "featurize again to include them", summary.unread, UNREAD.rstrip(": "))
    if summary.rejected:
        log.info("%d recordings hold no cough the detector finds (p < %g): rejected, not featurized "
                 "(status == 'rejected' in %s/recordings)", summary.rejected, s.min_cough_probability, out)
    return summary
