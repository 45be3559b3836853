"""Splits by participant: every participant's recordings in one split (train, val or test),
stratified by label, each split with both classes; then the rows and Ray Datasets of each."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import CoughError
from ..model.networks import CLASS_NAMES
from ..tables.schema import stored_names

log = logging.getLogger("cough.train")

#: Columns the workers read; ``log_mel`` is never read for training.
IMAGE_COLUMNS = ["recording_id", "window_index", "label", "image"]


def participant_labels(recs: pd.DataFrame) -> pd.Series:
    """Each participant's label (the majority of their recordings'), by participant: what
    splits and folds are stratified on, so that both classes are counted in people."""
    return recs.groupby("participant")["label"].mean().round().astype(int).sort_index()


def split_groups(recs: pd.DataFrame, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 seed: int = 0) -> dict[str, list[str]]:
    """Assign every group (participant) to one of train/val/test, stratified by label in people.

    Within each class (a participant's majority label), the participants are shuffled with
    ``seed`` and dealt out: ``round(fraction × participants of that class)`` to test and to
    val, at least one each and never the class's last for train. So every split holds both
    classes whenever each class has a participant for each split, however uneven the
    recordings per participant (a split without one class gives no AUC or threshold).
    Deterministic for ``seed``. ``test_fraction`` 0 means no test split.

    >>> recs = pd.DataFrame({"participant": [f"p{i}" for i in range(10)], "label": [0] * 6 + [1] * 4})
    >>> {k: len(v) for k, v in split_groups(recs, val_fraction=0.2, test_fraction=0.2).items()}
    {'train': 6, 'val': 2, 'test': 2}
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 0.9:
        raise CoughError("--val-fraction must lie in (0, 1), --test-fraction in [0, 1), "
                         "and together they must leave at least 10% for training")
    people = participant_labels(recs)
    if people.nunique() < 2:
        raise CoughError(f"every labelled recording is {CLASS_NAMES[int(people.iloc[0])]}: training needs both classes")
    splits = ["train", "val"] + (["test"] if test_fraction > 0 else [])
    per_class = people.value_counts()
    if per_class.min() < len(splits):
        raise CoughError(f"too few participants: {per_class.sort_index().to_dict()} per label, but the {len(splits)} "
                         f"splits ({', '.join(splits)}) each need a participant of each class; add recordings"
                         + (" or pass --test-fraction 0" if test_fraction > 0 else ""))
    rng = np.random.RandomState(seed)
    out: dict[str, list[str]] = {s: [] for s in splits}
    for label in (0, 1):
        members = list(people.index[people == label])
        rng.shuffle(members)
        n = len(members)
        n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
        n_val = max(1, round(val_fraction * n))
        while n_test + n_val > n - 1:  # the class keeps at least one participant to train on
            if n_test > n_val and n_test > 1:
                n_test -= 1
            else:
                n_val -= 1
        if n_test:
            out["test"] += members[:n_test]
        out["val"] += members[n_test:n_test + n_val]
        out["train"] += members[n_test + n_val:]
    return {s: sorted(v) for s, v in out.items()}


def split_windows(index: pd.DataFrame, groups: dict[str, list[str]], exclude_paths: list[str]) -> dict:
    """The index rows (one per image) each split trains or evaluates on."""
    used = index[~index["path"].isin(exclude_paths) & index["label"].notna()]
    split_of = {g: name for name, members in groups.items() for g in members}
    split = used["participant"].fillna(used["recording_id"]).map(split_of)
    return {name: used[split == name].assign(label=lambda f: f["label"].astype(int)) for name in groups}


#: Up to this many bytes of images, the driver reads the splits itself (one pyarrow scan of
#: the Parquet shards) and hands them to Ray as in-memory blocks: 1 s on the shared archive
#: (114 MB), where three Ray Data reads took 15-27 s of scheduling and worker start-up on
#: 2 cores, more than the whole training of 4 epochs (docs/benchmarks.md).
DRIVER_READ_BYTES = 1 << 30
#: Larger splits that take less than this share of Ray's object store are read by Ray Data
#: and materialized there, so that each epoch iterates memory instead of re-reading Parquet.
CACHE_FRACTION = 0.2


def split_datasets(images, groups: dict[str, list[str]], exclude_paths: list[str], *,
                   image_bytes: int | None = None) -> dict:
    """One Ray Dataset per split: the images of its groups (a :class:`cough.tables.storage.Location`
    of an OUT's images folder; ``log_mel`` is not read). A cough 0.1 OUT's columns come out
    under their current names.

    ``image_bytes``, the size of the splits' images, decides where they are read:
    at most :data:`DRIVER_READ_BYTES`, by the driver into Ray's object store; at most
    :data:`CACHE_FRACTION` of the object store, by Ray Data, materialized there; larger (or
    None), lazily by Ray Data, streamed from storage every epoch (the filter is pushed down
    into the Parquet scan).
    """
    import pyarrow.dataset as pads
    import ray
    from ray.data.expressions import col

    from ..tables.storage import retry

    fs, path = images.fs, images.path
    shards = retry(lambda: pads.dataset(path, filesystem=fs, format="parquet"), what=f"read {images.uri}",
                   where=images)
    participant, *columns = stored_names(["participant", *IMAGE_COLUMNS], shards.schema.names)
    if image_bytes is not None and image_bytes <= DRIVER_READ_BYTES:
        log.debug("reading %.0f MB of images in the driver", image_bytes / 1e6)
        return retry(lambda: _read_in_driver(shards, groups, exclude_paths, participant, columns),
                     what=f"read {images.uri}", where=images)
    renamed = {old: new for old, new in zip(columns, IMAGE_COLUMNS) if old != new}
    out = {}
    for name, members in groups.items():
        keep = col(participant).is_in(list(members)) & col("label").is_not_null()
        if exclude_paths:
            keep = keep & ~col("path").is_in(list(exclude_paths))
        ds = ray.data.read_parquet(path, filesystem=fs, num_cpus=0.25).filter(expr=keep).select_columns(columns)
        out[name] = ds.rename_columns(renamed) if renamed else ds
    if image_bytes is not None and image_bytes <= CACHE_FRACTION * ray.cluster_resources().get("object_store_memory", 0):
        log.debug("caching %.0f MB of images in the object store", image_bytes / 1e6)
        return {name: ds.materialize() for name, ds in out.items()}
    log.debug("streaming the images from storage every epoch")
    return out


def _read_in_driver(shards, groups: dict[str, list[str]], exclude_paths: list[str], participant: str,
                    columns: list[str], block_rows: int = 256) -> dict:
    """:func:`split_datasets` for small splits: one filtered scan of ``shards`` (a pyarrow
    dataset of the images table), split by group, put into Ray's object store in blocks of
    ``block_rows`` images."""
    import pyarrow.compute as pc
    import ray

    keep = pc.field(participant).isin([m for members in groups.values() for m in members]) & \
        pc.field("label").is_valid()
    if exclude_paths:
        keep = keep & ~pc.field("path").isin(list(exclude_paths))
    # in the recordings' order, whatever the shards' names or the order a store lists them in:
    # the seeded shuffle then sees the same sequence wherever the OUT lies
    table = shards.to_table(columns=[participant, *columns], filter=keep).sort_by(
        [("recording_id", "ascending"), (columns[1], "ascending")])
    out = {}
    for name, members in groups.items():
        part = table.filter(pc.field(participant).isin(list(members))).select(columns).rename_columns(IMAGE_COLUMNS)
        out[name] = ray.data.from_arrow([part.slice(i, block_rows) for i in range(0, max(part.num_rows, 1), block_rows)])
    return out
