"""The training set: a committed featurize OUT checked for training, its index (one row
per image, no tensors) and one row per labelled recording."""

from __future__ import annotations

import logging
import os

import pandas as pd

from ..errors import CoughError
from ..tables.schema import current_names, stored_names

log = logging.getLogger("cough.train")

#: Columns the driver reads to split (no tensors).
INDEX_COLUMNS = ["recording_id", "path", "window_index", "label", "participant"]


def read_manifest(shards: str):
    """The committed ``cough featurize`` OUT at ``shards`` (:class:`cough.tables.shards.FeaturesOut`),
    or a CoughError saying what is wrong."""
    from ..tables.shards import read_out

    out = read_out(shards)
    if not out.images.is_dir():
        raise CoughError(f"SHARDS {out.loc.uri} has no {out.info.tables['images']}/ folder: is it complete?")
    nested = [i.path for i in out.images.listdir(recursive=True) if i.path.endswith("manifest.json")]
    if nested:
        raise CoughError(f"SHARDS {out.images.uri} holds another featurize output ({nested[0]}): "
                         "shards of several runs cannot be mixed; featurize them together instead")
    return out


def read_index(out) -> pd.DataFrame:
    """One row per image (no tensors): recording_id, path, window_index, label, participant
    (also from a cough 0.1 OUT, whose columns were named window and group).

    Refuses shards that disagree with their manifest (image count or image shape): those
    hold shards of several featurize runs, possibly with other featurizer versions.
    """
    import pyarrow.dataset as pads

    from ..errors import StoreError
    from ..tables.storage import retry

    shards, manifest = out.loc.uri, out.info

    def scan():
        dataset = pads.dataset(out.images.path, filesystem=out.images.fs, format="parquet",
                               exclude_invalid_files=False)
        fragments = list(dataset.get_fragments())
        return dataset, fragments, [f.physical_schema for f in fragments]

    try:
        dataset, fragments, schemas = retry(scan, what=f"read {out.images.uri}", where=out.images)
    except StoreError:
        raise
    except Exception as exc:
        raise CoughError(f"SHARDS {shards}: cannot read images/ ({exc})") from None
    if not fragments:
        raise CoughError(f"SHARDS {shards} holds no images: nothing to train on")
    size = manifest.image_size
    for fragment, schema in zip(fragments, schemas):
        shape = list(schema.field("image").type.shape) if "image" in schema.names else None
        if shape != [size, size, 3]:
            raise CoughError(f"SHARDS {shards}: {os.path.basename(fragment.path)} holds images of shape "
                             f"{shape}, but manifest.json says {size}x{size}x3: shards of another "
                             "featurizer were mixed in; featurize again")
    table = current_names(retry(lambda: dataset.to_table(columns=stored_names(INDEX_COLUMNS, dataset.schema.names)),
                                what=f"read {out.images.uri}", where=out.images))
    if table.num_rows != manifest.images:
        raise CoughError(f"SHARDS {shards}: images/ holds {table.num_rows} images but manifest.json says "
                         f"{manifest.images}: shards were added or removed; featurize again")
    index = table.to_pandas()
    index["label"] = index["label"].astype("Int8")
    return index


def recordings(index: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per labelled recording (recording_id, path, label, participant, windows) and the
    paths whose images are left out: unlabelled ones, and the second name of the same bytes
    (one recording, one split). When copies of the same bytes disagree on the label the
    recording is left out entirely.

    >>> recordings(index)            # doctest: +SKIP
    """
    if index.empty:
        raise CoughError("SHARDS holds no images: nothing to train on")
    per_path = (index.groupby("path", sort=True)
                .agg(recording_id=("recording_id", "first"), label=("label", "first"),
                     participant=("participant", "first"), windows=("window_index", "size")).reset_index())
    labelled = per_path[per_path["label"].notna()]
    if labelled.empty:
        raise CoughError("SHARDS has no labelled images; train needs labels: featurize with --labels "
                         "or put recordings in pos/ and neg/ folders")
    conflicting = labelled.groupby("recording_id")["label"].nunique()
    conflicting = set(conflicting[conflicting > 1].index)
    if conflicting:
        log.warning("%d recordings appear under several names with different labels; left out",
                    len(conflicting))
    kept = labelled[~labelled["recording_id"].isin(conflicting)].drop_duplicates("recording_id")
    dropped = sorted(set(per_path["path"]) - set(kept["path"]))
    if kept.empty:
        raise CoughError("SHARDS has no recording with a consistent label: nothing to train on")
    kept = kept.assign(label=kept["label"].astype(int),
                       participant=kept["participant"].fillna(kept["recording_id"]))
    return kept.reset_index(drop=True), dropped


#: Dropped files a summary names (all of them are in model.json's excluded_paths).
NAMED = 5


def left_out(index: pd.DataFrame, kept: pd.DataFrame, dropped: list[str]) -> dict:
    """What training left out of SHARDS' images, by reason, for the summary and the log:
    ``unlabelled`` files, ``duplicates`` (a second name of bytes trained on under another name:
    one recording, one split; the first few named with the name kept), and files whose copies
    disagree on the label (``conflicting``). Counts are of files.

    >>> index = pd.DataFrame({"path": ["/a.wav", "/a-copy.wav", "/b.wav"], "recording_id": ["x", "x", "y"],
    ...                       "label": pd.array([1, 1, None], dtype="Int8")})
    >>> left_out(index, index.iloc[:1], ["/a-copy.wav", "/b.wav"])
    {'unlabelled': 1, 'duplicates': 1, 'conflicting': 0, 'duplicate_examples': ['/a-copy.wav (same bytes as /a.wav)']}
    """
    files = index.drop_duplicates("path").set_index("path")
    kept_path = dict(zip(kept["recording_id"], kept["path"]))
    unlabelled = duplicates = conflicting = 0
    examples: list[str] = []
    for path in dropped:
        row = files.loc[path]
        if pd.isna(row["label"]):
            unlabelled += 1
        elif row["recording_id"] in kept_path:
            duplicates += 1
            if len(examples) < NAMED:
                examples.append(f"{path} (same bytes as {kept_path[row['recording_id']]})")
        else:
            conflicting += 1
    return {"unlabelled": unlabelled, "duplicates": duplicates, "conflicting": conflicting,
            "duplicate_examples": examples}
