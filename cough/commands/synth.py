"""``cough synth``'s command line: its flags (:data:`HELP`, :data:`EXAMPLE`,
:func:`add_arguments`) and :func:`run`, which calls :func:`cough.synth.synth_archive` with them.
cough/cli.py builds the parser from them; ``python -m jobs.synth`` runs the same."""

from __future__ import annotations

from ..flags import integer, number
from ..synth import FORMATS, synth_archive

HELP = "write a labelled synthetic cough archive (raw/ + labels.csv)"
EXAMPLE = "cough synth --out data/sample --n 60 --seed 0"


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="directory to write raw/ and labels.csv into")
    p.add_argument("--n", type=integer(at_least=1), required=True, help="number of recordings")
    p.add_argument("--seed", type=integer(at_least=0), default=0)
    p.add_argument("--max-duration-s", type=number(at_least=0.3, at_most=600), default=10.0, help="longest recording (default 10)")
    p.add_argument("--positive-rate", type=number(at_least=0, at_most=1), default=0.4, help="share of positive participants")
    p.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of mp3,wav,ogg,flac")


def run(args) -> dict:
    return synth_archive(args.out, n=args.n, seed=args.seed, max_duration_s=args.max_duration_s,
                         positive_rate=args.positive_rate, formats=tuple(args.formats.split(",")))
