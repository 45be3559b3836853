"""``cough labels``'s command line: its flags (:data:`HELP`, :data:`EXAMPLE`,
:func:`add_arguments`) and :func:`run`, which calls :func:`cough.sidecars.labels_csv` with them.
cough/cli.py builds the parser from them; ``python -m jobs.labels`` runs the same."""

from __future__ import annotations

from ..sidecars import LabelsSettings, labels_csv
from .featurize import add_selection_arguments, selection

HELP = "build a labels CSV (for --labels) from the sidecar files an archive keeps beside its recordings"
EXAMPLE = """cough labels coughvid/ --sidecar '{stem}.json' --label-field status \\
      --positive COVID-19,symptomatic --negative healthy --out coughvid-labels.csv
  (COUGHVID: <uuid>.json beside each <uuid>.webm, {"status": "healthy", "age": "34", ...})

  cough labels study/ --sidecar metadata.json --label-field covid_status \\
      --positive positive_mild,positive_moderate,positive_asymp --negative healthy --out labels.csv
  (one folder per participant, study/<participant>/metadata.json; the participant is the folder)

  then: cough featurize study/ --labels labels.csv --include '*/cough-*.wav' --out features"""


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="directory of recordings (searched recursively) or URI")
    p.add_argument("--out", required=True, help="the labels CSV to write (a new file): filename (path relative to "
                                                "SOURCE), label, participant, then every other sidecar field")
    p.add_argument("--sidecar", required=True,
                   help="the sidecar's name: a file in each recording's folder or the folders above it "
                        "(metadata.json), or a pattern beside each recording ({stem}.json, {name}.csv); JSON "
                        "objects, or CSV files of one row")
    p.add_argument("--label-field", required=True, help="the sidecar field that holds the label")
    p.add_argument("--positive", default="", help="comma-separated values of --label-field meaning positive")
    p.add_argument("--negative", default="", help="comma-separated values of --label-field meaning negative "
                                                  "(with neither: positive/negative, 1/0, true/false)")
    p.add_argument("--participant-field", help="the sidecar field naming the participant (default: the folder "
                                               "the recording is in)")
    add_selection_arguments(p)


def _values(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def run(args) -> dict:
    settings = LabelsSettings(sidecar=args.sidecar, label_field=args.label_field, positive=_values(args.positive),
                              negative=_values(args.negative), participant_field=args.participant_field,
                              selection=selection(args))
    return labels_csv(args.source, args.out, settings).to_dict()
