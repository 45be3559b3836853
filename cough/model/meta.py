"""``MODEL/model.json`` as a typed record (:class:`ModelMeta`, a :class:`cough.tables.artifacts.Record`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import CoughError
from ..tables.artifacts import Record, spec
from .networks import ARCHITECTURES


@dataclass(kw_only=True)
class ModelMeta(Record):
    """``MODEL/model.json``, the commit of a MODEL (cough/model/store.py): the architecture, the
    featurizer it expects, the threshold, the splits and metrics of its training.

    Every field is optional (which ones a job needs is the job's check): a model.json
    from an older cough, or written by hand for a test, holds only some.
    """

    FILE: ClassVar[str] = "model.json"
    ADVICE: ClassVar[str] = "retrain the model with this cough"

    arch: str | None = spec("str")
    parameters: int | None = spec("count")
    class_names: list | None = spec("list")
    aggregation: str | None = spec("str")
    featurizer: dict | None = spec("dict")
    featurizer_version: str | None = spec("str")
    shards: str | None = spec("str")
    splits: dict | None = spec("dict")
    excluded_paths: list | None = spec("list")
    class_weight: dict | None = spec("dict")
    history: list | None = spec("list")
    training: dict | None = spec("dict")
    cough_version: str | None = spec("str")
    ray_version: str | None = spec("str")
    created_at: str | None = spec("str")
    threshold: float | None = spec("probability", meaning="the decision threshold")
    threshold_rule: str | None = spec("str")
    #: The cough detector's threshold the training data was featurized with (score uses it by default).
    min_cough_probability: float | None = spec("probability")
    metrics: dict | None = spec("dict")
    cv: dict | None = spec("dict")
    format: str | None = spec("str")
    version: str | None = spec("str")
    weights: str | None = spec("str")
    kind: str | None = spec("str")
    schema_version: int | None = spec("count")

    def check(self, where: str) -> None:
        from ..audio.colormap import lookup_table
        from ..audio.features import FeaturizerParams

        if self.arch is not None and self.arch not in ARCHITECTURES:
            raise CoughError(f"{where} names the architecture {self.arch!r}, which this cough does not build "
                             f"(it knows {', '.join(sorted(ARCHITECTURES))}): {self.ADVICE}")
        try:
            if self.featurizer is not None:
                lookup_table(FeaturizerParams.from_dict(self.featurizer).colormap)
        except Exception as exc:  # UsageError from the parameters' own checks, TypeError for unknown keys, ...
            raise CoughError(f"{where} has invalid featurizer parameters: {exc}") from None

    def training_groups(self) -> set[str] | None:
        """Participants the model was fitted or tuned on (its ``train`` and ``val`` splits);
        None when model.json does not say."""
        if self.splits is None:
            return None
        return {str(g) for name in ("train", "val") for g in self.splits.get(name, {}).get("groups", [])}
