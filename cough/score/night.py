"""What one score run must read: SOURCE listed in Ray tasks (cough/tables/archive.py) and kept, by a
distributed anti-join against PRED's file ledger (cough/tables/ledger.py), to the file versions this
model version has not seen; a featurize OUT is read whole (no ledger)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..audio.detector import RECORDING_THRESHOLD
from ..errors import CoughError
from ..tables.archive import EVERY_FILE
from .settings import NightCounts

if TYPE_CHECKING:
    import ray.data


@dataclass
class Night:
    """What one run found in SOURCE before scoring: the rows stage 1 reads (``todo``,
    ``counts.unseen`` of them), the stage-1 function that reads them and its arguments
    (raw archives go through the file ledger; a featurize OUT is read whole)."""

    todo: "ray.data.Dataset"
    prepare: Callable          # cough.score.stages.prepare_recordings or prepare_shards
    prepare_kwargs: dict
    batch_size: int
    metadata_columns: list[str]
    counts: NightCounts
    #: how the listed files were labelled (cough.tables.archive.ListingCounts.to_dict), and what a person must hear
    labels: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def list_night(source, info, pred, *, index, rescore, prefixes, since, batch_size, selection=EVERY_FILE,
               min_cough_probability: float = RECORDING_THRESHOLD, labels: str | None = None,
               group_pattern: str | None = None) -> Night:
    """List SOURCE in Ray tasks and keep what the ledger has not seen for this model version
    (everything with ``rescore``); a featurize OUT's shards as they are. ``index``: the labels
    (:func:`cough.tables.labels.load_labels`, read before Ray starts so that a bad CSV is a usage
    error with nothing started). Call after Ray is up."""
    import ray

    from ..tables.archive import in_batches, listing_dataset
    from ..tables.ledger import Ledger, unseen
    from ..tables.shards import is_out, read_out, shard_names
    from .stages import prepare_recordings, prepare_shards

    if is_out(source):
        out = read_out(source, what="SOURCE")
        manifest = out.info
        if manifest.featurizer_version != info.featurizer_version:
            raise CoughError(f"SOURCE {source.uri} was featurized with featurizer version "
                             f"{manifest.featurizer_version}, MODEL {info.model_dir} expects "
                             f"{info.featurizer_version}: score the raw archive instead, or re-featurize")
        shards = shard_names(out.recordings)
        ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
        excluded = manifest.excluded or 0  # left out when OUT was made: no rows to read
        n = (manifest.inputs or 0) - excluded
        return Night(ds, prepare_shards, {"recordings": out.recordings, "images": out.images, "events": out.events}, 1,
                     manifest.metadata_columns, NightCounts(listed=n, new=n, changed=0, seen_before=0,
                                                            excluded=excluded))

    found = listing_dataset(source.uri, index, selection=selection, prefixes=prefixes, since=since)
    warnings = found.check(labels, group_pattern)
    listing = found.rows.materialize()
    listed = listing.count()
    if listed == 0 and not (prefixes or since):
        raise CoughError(f"SOURCE {source.uri} holds no recordings"
                         + (f" that --include/--exclude keep ({found.excluded} left out)" if found.excluded else ""))
    todo, changed = (listing, 0) if rescore else unseen(listing, Ledger(pred), info.version)
    n = todo.count()
    todo, batch = in_batches(todo, n, batch_size)
    counts = NightCounts(listed=listed, new=n - changed, changed=changed, seen_before=listed - n,
                         excluded=found.excluded)
    return Night(todo, prepare_recordings, {"params": info.params, "min_cough_probability": min_cough_probability},
                 batch, index.metadata_columns, counts, found.counts.to_dict(), warnings)
