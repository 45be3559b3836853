"""Where evaluated data came from: which archives, whether they are synthetic, and where
the labels came from, so that a report never passes synthetic data off as real.

``cough synth`` writes :data:`MARKER` next to the archive it makes (``OUT/raw`` and
``OUT/labels.csv``); its participant ids have the form :data:`SYNTH_PARTICIPANT`. Either
is enough to recognise a synthetic archive: the marker when SOURCE is still readable, the
ids when only the predictions are.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("cough")

MARKER = "synth.json"
#: Participant ids that ``cough synth`` gives: s<seed>p<5 digits>.
SYNTH_PARTICIPANT = re.compile(r"^s\d+p\d{5}$")


def marker(source: str) -> dict | None:
    """The :data:`MARKER` of the archive ``source`` belongs to (``source`` itself, its parent,
    or, for an OUT of ``cough featurize``, the SOURCE its manifest names); None if none."""
    from .shards import is_out, read_out
    from .storage import Location

    def parent(loc: Location) -> Location:
        return loc.like(loc.path.rsplit("/", 1)[0]) if "/" in loc.path.strip("/") else loc

    try:
        candidates = [Location.of(source), parent(Location.of(source))]
        if is_out(candidates[0]):
            featurized = read_out(candidates[0]).info.source
            if featurized:
                candidates += [Location.of(featurized), parent(Location.of(featurized))]
        for folder in candidates:
            if folder.join(MARKER).exists():
                return folder.join(MARKER).read_json()
    except Exception as exc:  # a moved or unreadable SOURCE: the participant ids still speak
        log.debug("no synthetic marker for %s: %s", source, exc)
    return None


def describe(sources: list[str], participants, labels: str) -> dict:
    """``{"sources", "synthetic", "evidence", "labels"}``; ``synthetic`` is ``"yes"``,
    ``"partly"`` or ``"no"`` (not recognised as synthetic), ``evidence`` says why."""
    markers = {s: m for s in sources if (m := marker(s))}
    ids = [str(p) for p in participants if p is not None and str(p) not in ("", "nan", "<NA>")]
    synth_ids = sum(bool(SYNTH_PARTICIPANT.match(p)) for p in ids)
    if markers and len(markers) == len(sources):
        synthetic = "yes"
        evidence = "; ".join(f"{s}: {MARKER} written by cough synth (seed {m.get('seed')})" for s, m in markers.items())
    elif ids and synth_ids == len(ids):
        synthetic = "yes"
        evidence = f"all {len(ids)} participant ids have the form cough synth gives (s<seed>p<number>)"
    elif markers or synth_ids:
        synthetic = "partly"
        evidence = (f"{len(markers)} of {len(sources)} archives carry cough synth's {MARKER}; "
                    f"{synth_ids} of {len(ids)} participant ids have the form cough synth gives")
    else:
        synthetic = "no"
        evidence = f"no {MARKER} of cough synth next to the archives, and no participant id of the form it gives"
    return {"sources": sources, "synthetic": synthetic, "evidence": evidence, "labels": labels}


def synth_marker(**params) -> dict:
    """What ``cough synth`` writes to :data:`MARKER`: its parameters."""
    from .. import __version__
    from .schema import JSON_SCHEMA_VERSION

    return {"schema_version": JSON_SCHEMA_VERSION, "synthetic": True, "generator": "cough synth",
            "cough_version": __version__, **params}
