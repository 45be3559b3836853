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

from .. import __version__
from ..errors import CoughError, UsageError
from ..audio.features import DEFAULT_PARAMS, FeaturizerParams

log = logging.getLogger("cough.featurize")


def plan(listing, output) -> dict:
    """What featurizing ``listing`` (:func:`cough.tables.archive.listing_table`'s rows) into
    ``output`` (what :func:`cough.tables.storage.claim` gave) would do."""
    import os
    from collections import Counter

    formats = Counter(os.path.splitext(p)[1].lstrip(".").lower() or "none" for p in listing.column("path").to_pylist())
    participants = {p for p in listing.column("participant").to_pylist()}
    return {"dry_run": True, "would_read": listing.num_rows, "formats": dict(sorted(formats.items())),
            "labelled": listing.num_rows - listing.column("label").null_count, "participants": len(participants),
            "would_write": output.loc.uri, "would_replace": output.state == "ours"}


def list_work(source: str, index, batch_size: int):
    """``(dataset, listed, batch_size)``: SOURCE listed in Ray tasks (:func:`cough.tables.archive.listing_dataset`,
    labels attached from ``index``) and cut into batches; the driver holds object references,
    not the listing. Call after Ray is up."""
    from ..tables.archive import in_batches, listing_dataset

    listing = listing_dataset(source, index).materialize()
    listed = listing.count()
    if listed == 0:
        raise CoughError(f"SOURCE {source} holds no recordings")
    ds, batch_size = in_batches(listing, listed, batch_size)
    return ds, listed, batch_size


def featurize(source: str, out: str, *, labels=None, group_pattern=None,
              params: FeaturizerParams = DEFAULT_PARAMS, batch_size: int = 64,
              address: str | None = None, num_cpus: int | None = None, dry_run: bool = False) -> dict:
    """Featurize every recording under ``source`` into ``out``; readers of ``out`` see the
    previous complete output until this one commits.

    Joins Ray at ``address`` or starts a local instance, unless Ray is already up.
    ``dry_run``: only :func:`plan`.
    """
    from ..audio.decode import TASK_MEMORY
    from ..runtime import init_ray
    from ..tables.archive import listing_table
    from ..tables.artifacts import Manifest
    from ..tables.labels import load_labels
    from ..tables.shards import KIND, MANIFEST_FILE, TABLES
    from .batch import COUNTS, featurize_batch
    from ..tables.storage import Location, claim, new_version, remove_stale

    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    source_loc = Location.of(source)
    output = claim(out, KIND, inputs={"SOURCE": source_loc})
    if not source_loc.exists():  # found before Ray starts, as every problem with the job's inputs
        raise CoughError(f"SOURCE {source_loc.uri} does not exist")
    index = load_labels(labels, source_loc.uri, group_pattern=group_pattern)  # usage errors before Ray starts
    metadata_columns = index.metadata_columns
    if dry_run:
        listing = listing_table(source_loc.uri, index)
        if listing.num_rows == 0:
            raise CoughError(f"SOURCE {source_loc.uri} holds no recordings")
        return plan(listing, output)
    labels_uri = Location.of(labels).uri if labels else None
    init_ray(address, num_cpus=num_cpus)
    ds, listed, batch_size = list_work(source_loc.uri, index, batch_size)
    log.info("featurizing %d recordings from %s", listed, source_loc.uri)
    version = new_version()
    with output.writing(MANIFEST_FILE) as loc:
        # One operator, nothing downstream to reserve CPUs for: Ray Data's reservation
        # held one of two CPUs idle at times (164 -> 205 files/s without it, 4 runs each).
        ds.context.op_resource_reservation_enabled = False
        folders = {t: loc.join(t, version) for t in TABLES}
        counts = ds.map_batches(featurize_batch, batch_size=batch_size, batch_format="pyarrow", memory=TASK_MEMORY,
                                fn_kwargs={**folders, "params": params, "metadata_columns": metadata_columns})
        totals = dict.fromkeys(COUNTS, 0)
        for batch in counts.iter_batches(batch_size=None, batch_format="pyarrow"):
            for key in totals:
                totals[key] += sum(batch.column(key).to_pylist())
        if totals["inputs"] != listed:
            raise CoughError(f"lost recordings: {listed} listed, {totals['inputs']} processed")
        manifest = Manifest(inputs=totals["inputs"], ok=totals["ok"], errors=totals["errors"], images=totals["images"],
                            kind=KIND, version=version, tables={t: f"{t}/{version}" for t in TABLES},
                            source=source_loc.uri, labels=labels_uri, group_pattern=group_pattern,
                            featurizer=params.to_dict(), featurizer_version=params.version,
                            metadata_columns=metadata_columns, cough_version=__version__,
                            created_at=dt.datetime.now(dt.timezone.utc).isoformat())
        loc.join(MANIFEST_FILE).write_json(manifest.to_dict())  # the commit point
    for table in TABLES:  # the version this run replaced, and any a crashed run left
        remove_stale(loc.join(table), {version})
    if totals["errors"]:
        log.warning("%d of %d recordings could not be featurized; their reasons are in %s/recordings "
                    "(status == 'error')", totals["errors"], totals["inputs"], out)
    return {**totals, "out": output.loc.uri, "featurizer_version": params.version}
