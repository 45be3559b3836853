"""What one score run must read: SOURCE listed in Ray tasks (cough/tables/archive.py) and kept, by a
distributed anti-join against PRED's file ledger (cough/tables/ledger.py), to the file versions this
model version has not seen; a featurize OUT is read whole (no ledger)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..errors import CoughError
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


def list_night(source, info, pred, *, index, rescore, prefixes, since, batch_size) -> Night:
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
        n = manifest.inputs or 0
        return Night(ds, prepare_shards, {"recordings": out.recordings, "images": out.images}, 1,
                     manifest.metadata_columns, NightCounts(listed=n, new=n, changed=0, seen_before=0))

    listing = listing_dataset(source.uri, index, prefixes=prefixes, since=since).materialize()
    listed = listing.count()
    if listed == 0 and not (prefixes or since):
        raise CoughError(f"SOURCE {source.uri} holds no recordings")
    todo, changed = (listing, 0) if rescore else unseen(listing, Ledger(pred), info.version)
    n = todo.count()
    todo, batch = in_batches(todo, n, batch_size)
    counts = NightCounts(listed=listed, new=n - changed, changed=changed, seen_before=listed - n)
    return Night(todo, prepare_recordings, {"params": info.params}, batch, index.metadata_columns, counts)
