"""Reading PRED for a report: its rows (only the columns the report needs), labels from a
labels CSV, one model version, the latest row per recording, the run records and the
model.json they name, and the decision threshold."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from ..model.meta import ModelMeta
from ..tables.artifacts import RunRecord
from ..tables.schema import PRED_COLUMNS
from ..evaluation.baselines import label_metadata_columns
from ..errors import CoughError, StoreError, UsageError

log = logging.getLogger("cough.report")

#: Default decision threshold when neither --threshold nor PRED gives one.
DEFAULT_THRESHOLD = 0.5


def read_predictions(pred, *, columns=()) -> pd.DataFrame:
    """PRED (a Delta table) as a DataFrame of the report's columns (plus ``columns``), all runs.

    >>> frame = read_predictions("out/demo/pred", columns=["site"])   # doctest: +SKIP
    """
    from ..tables.pred import open_pred
    from ..tables.storage import retry

    target = open_pred(pred)
    table = target.table()
    if table is None:  # no run has committed yet
        return pd.DataFrame({"status": pd.Series(dtype="string"), "score": pd.Series(dtype=float)})
    try:
        data = retry(table.to_pyarrow_dataset, what=f"read PRED {target.loc.uri}", where=target.loc)
    except StoreError:
        raise
    except Exception as exc:
        raise CoughError(f"cannot read PRED {target.loc.uri}: {exc}") from None
    names = set(data.schema.names)
    missing = {"status", "score"} - names
    if missing:
        raise CoughError(f"PRED {target.loc.uri} lacks column(s) {sorted(missing)}: is it the output of `cough score`?")
    wanted = [c for c in dict.fromkeys([*PRED_COLUMNS, *label_metadata_columns(names), *columns]) if c in names]
    frame = retry(lambda: data.to_table(columns=wanted), what=f"read PRED {target.loc.uri}",
                  where=target.loc).to_pandas()
    for col in ("label", "predicted"):
        if col in frame:
            frame[col] = frame[col].astype("Int8")
    for col in ("run_id", "model_version", "status", "participant"):
        if col in frame:
            frame[col] = frame[col].astype("string")
    return frame


def attach_labels(frame: pd.DataFrame, csv: str) -> tuple[pd.DataFrame, dict]:
    """Labels (and participant, metadata columns) from a labels CSV, matched to PRED rows by
    the rule the jobs use (docs/featurize.md): a CSV of paths matches a row whose ``path``
    ends with one of them, by path only; a CSV of bare file names matches a row by its file
    name, which must then be unique among PRED's files (else a UsageError naming an example).
    Where a CSV row matches, its values win over PRED's; elsewhere PRED's stay. Returns the
    frame and match counts (by path, by name)."""
    from ..tables.labels import ambiguous_names, load_labels

    source = os.path.dirname(csv.rstrip("/")) or "."
    index = load_labels(csv, source)
    frame = frame.copy()
    columns = ["label", "participant", *index.metadata_columns]
    found: dict[str, list] = {c: [] for c in columns}
    by = {"path": 0, "name": 0}
    paths = frame.get("path", pd.Series([None] * len(frame), dtype=object))
    if not index.paths_only:  # which file each bare name means must be certain
        names = pd.Series([PurePosixPath(p).name for p in paths.dropna()], dtype=object)
        hits = names[names.isin(set(index.by_relpath))].value_counts()
        ambiguous_names({str(k): int(v) for k, v in hits.items()}, csv)
    for path in paths:
        rec, how = _match(index, path)
        if how is not None:
            by[how] += 1
        for c in columns:
            found[c].append(None if rec is None else rec.get(c))
    matched = by["path"] + by["name"]
    for c in columns:
        values = pd.Series(found[c], index=frame.index, dtype=object)
        if c == "label":
            values = values.astype("Int8")
        if c in frame:
            frame[c] = values.where(values.notna(), frame[c])
        else:
            frame[c] = values
    if "participant" in frame:
        frame["participant"] = frame["participant"].astype("string")
    return frame, {"csv": csv, "rows_matched": int(matched), "rows_matched_by_path": by["path"],
                   "rows_matched_by_name": by["name"], "rows": int(len(frame)), "metadata_columns": index.metadata_columns}


def _match(index, path) -> tuple[dict | None, str | None]:
    """``(the CSV row of PRED's ``path``, "path" or "name")``, or ``(None, None)``."""
    if not isinstance(path, str):
        return None, None
    parts = PurePosixPath(path.split("://", 1)[-1]).parts
    if not index.paths_only:
        rec = index.by_relpath.get(parts[-1]) if parts else None
        return (rec, "name") if rec is not None else (None, None)
    for k in range(len(parts), 0, -1):
        rec = index.by_relpath.get("/".join(parts[-k:]))
        if rec is not None:
            return rec, "path"
    return None, None


def select_model_version(frame: pd.DataFrame, version: str | None = None) -> tuple[pd.DataFrame, str | None, list]:
    """Rows of one model version: ``version``, else the one that scored most recently."""
    if "model_version" not in frame or frame.empty:
        return frame, None, []
    versions = frame["model_version"].dropna().unique().tolist()
    if version is not None:
        if version not in versions:
            raise UsageError(f"--model-version {version} is not in PRED; it holds {sorted(versions) or 'none'}")
        chosen = version
    elif not versions:
        return frame, None, []
    else:
        order = frame.dropna(subset=["model_version"])
        chosen = (order.sort_values("scored_at")["model_version"].iloc[-1]
                  if "scored_at" in order else sorted(versions)[-1])
    notes = []
    if len(versions) > 1:
        notes.append(f"PRED holds predictions of {len(versions)} model versions; this report covers "
                     f"{chosen} only (choose another with --model-version).")
    keep = frame["model_version"].isna() | (frame["model_version"] == chosen)
    return frame[keep], str(chosen), notes


def current_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per recording: its latest prediction (by ``scored_at``). A recording is its
    ``recording_id``, or its path when the file could not be read."""
    if frame.empty:
        return frame
    key = frame["recording_id"].astype(object) if "recording_id" in frame else pd.Series(np.nan, index=frame.index)
    if "path" in frame:
        key = key.where(key.notna(), "path:" + frame["path"].astype(str))
    ordered = frame.assign(_key=key)
    if "scored_at" in ordered:
        ordered = ordered.sort_values("scored_at", kind="stable")
    return ordered.drop_duplicates("_key", keep="last").drop(columns="_key").sort_index()


def run_records(pred, version: str | None) -> list[RunRecord]:
    """The run records in PRED's Delta log (each commit's ``cough.run``) of ``version``'s
    runs, oldest first."""
    from ..tables.pred import committed_runs, open_pred

    try:
        records = committed_runs(open_pred(pred))
    except StoreError:  # the store failing is not bad housekeeping: another evaluation must not follow
        raise
    except Exception as exc:  # unreadable housekeeping must not stop an evaluation
        log.warning("cannot read the run records of %s: %s", pred, exc)
        return []
    return [r for r in records if version is None or r.model_version == version]


@dataclass(frozen=True)
class ScoringModel:
    """What PRED's run records tell of the model that scored one version's rows."""

    #: The MODEL the latest run names and its model.json, when readable and of that version.
    model_dir: str | None = None
    meta: ModelMeta | None = None
    #: The rows are out-of-fold predictions of ``cough train --cv`` (K in ``cv_folds``).
    out_of_fold: bool = False
    cv_folds: int | None = None

    @property
    def seen_groups(self) -> set[str] | None:
        """Participants a model that scored them was trained or tuned on (none, out of fold);
        None when unknown."""
        if self.out_of_fold:
            return set()
        return self.meta.training_groups() if self.meta is not None else None


def scoring_model(records) -> ScoringModel:
    """The :class:`ScoringModel` of ``records`` (one model version's runs, oldest first): the
    MODEL the latest of them names, when it is readable and of the version that run used (the
    report never loads the model itself). A MODEL that is gone, or whose model.json this cough
    cannot trust, is passed over with a warning; one the store kept failing to give (a
    :class:`~cough.errors.StoreError`) stops the report: its evaluation would be another one
    (training participants in, the default threshold)."""
    from ..model.store import read_model_meta

    folds = [r for r in records if r.out_of_fold]
    out_of_fold, cv_folds = bool(folds), folds[-1].cv_folds if folds else None
    for record in reversed(list(records)):
        if not record.model:
            continue
        try:
            meta = read_model_meta(record.model)
        except StoreError as exc:
            raise StoreError(f"MODEL {record.model}, which scored PRED's rows: {exc}; the report is not written "
                             "(the previous one stays): run it again") from None
        except CoughError as exc:  # moved, or not a model this cough can trust: its threshold is not used
            log.warning("%s", exc)
            continue
        if str(meta.version) == str(record.model_version):
            return ScoringModel(record.model, meta, out_of_fold=out_of_fold, cv_folds=cv_folds)
    return ScoringModel(out_of_fold=out_of_fold, cv_folds=cv_folds)


def resolve_threshold(frame: pd.DataFrame, flag: float | None,
                      model: ScoringModel = ScoringModel()) -> tuple[float, str, list]:
    """``(threshold, where it came from, warnings)``: --threshold; else a ``threshold`` column
    of PRED; else the model's (its model.json); else :data:`DEFAULT_THRESHOLD`."""
    if flag is not None:
        if not 0.0 <= flag <= 1.0:
            raise UsageError(f"--threshold {flag} is not between 0 and 1")
        return float(flag), "--threshold", []
    if "threshold" in frame:
        values = frame["threshold"].dropna().unique()
        if len(values) > 1:
            raise CoughError(f"PRED rows carry {len(values)} different thresholds ({sorted(values)[:5]}); "
                             "choose one with --threshold")
        if len(values) == 1:
            return float(values[0]), "PRED's threshold column", []
    if model.meta is not None and model.meta.threshold is not None:
        return float(model.meta.threshold), f"the model ({model.model_dir}/{ModelMeta.FILE})", []
    return DEFAULT_THRESHOLD, "default", [
        f"The decision threshold is the default {DEFAULT_THRESHOLD:g}: neither PRED nor the model it names gives "
        "one. Give the model's threshold with --threshold if it differs."]
