"""``cough train``'s command line: its flags (:data:`HELP`, :data:`EXAMPLE`,
:func:`add_arguments`) and :func:`run`, which calls :func:`cough.train.job.train` with them.
cough/cli.py builds the parser from them; ``python -m jobs.train`` runs the same."""

from __future__ import annotations

from ..flags import integer, number
from ..model.networks import ARCHITECTURES
from ..runtime import add_ray_arguments
from ..train.crossval import LEAVE_ONE_OUT
from ..train.job import DEFAULT_ARCH, TrainSettings, train

HELP = "train the CNN on featurize shards with Ray Train (group-wise splits, checkpoints)"
EXAMPLE = "cough train out/features --out out/model --epochs 20 --workers 2"


def add_arguments(p) -> None:
    p.add_argument("shards", metavar="SHARDS", help="output directory of `cough featurize` (images/, manifest.json)")
    p.add_argument("--out", required=True, metavar="MODEL",
                   help="model folder to write (weights-<version>.h5, model.json): new, empty, or an earlier "
                        "`cough train` output, which this run replaces when it commits; anything else is refused")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCH,
                   help=f"network: 'seed' is the seed article's CNN (75.8M parameters); 'pooled' pools "
                        f"before its head (65k parameters); default {DEFAULT_ARCH} (see docs/train.md)")
    p.add_argument("--epochs", type=integer(at_least=1), default=30, help="epochs to train (default 30; the seed used 100)")
    p.add_argument("--batch-size", type=integer(at_least=1), default=32, help="global batch size, split across workers (default 32)")
    p.add_argument("--learning-rate", type=number(above=0, at_most=1), default=1e-3, help="Adam learning rate (default 0.001)")
    p.add_argument("--dropout", type=number(at_least=0, below=1), default=0.5, help="dropout before the head while training (default 0.5, the seed's)")
    p.add_argument("--workers", type=integer(at_least=1), default=1, help="Ray Train workers (data-parallel replicas, default 1)")
    p.add_argument("--val-fraction", type=number(above=0, below=1), default=0.15, help="share of groups for validation (default 0.15)")
    p.add_argument("--test-fraction", type=number(at_least=0, below=1), default=0.15,
                   help="share of groups held out for the test metrics (default 0.15; 0: no test split)")
    p.add_argument("--seed", type=integer(at_least=0), default=0, help="seed of the split, initial weights and shuffling (default 0)")
    p.add_argument("--early-stopping", action="store_true",
                   help="stop when validation loss has not improved for --patience epochs, keep the best epoch's weights")
    p.add_argument("--patience", type=integer(at_least=1), default=5, help="epochs without improvement before stopping (default 5)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of this MODEL from its last checkpoint")
    p.add_argument("--storage", help="where Ray Train keeps checkpoints (default: MODEL's folder/.cough-train, "
                                     "removed after success); use shared storage on a multi-node cluster")
    p.add_argument("--max-failures", type=integer(at_least=0), default=3,
                   help="worker failures to recover from, each from the last checkpoint (default 3)")
    p.add_argument("--cv", type=_folds, metavar="K",
                   help="grouped K-fold cross-validation (folds by participant, stratified by label in people): every "
                        "participant is scored once by a model that never saw it, into --cv-pred, and MODEL is a "
                        "final model trained on all of them with the threshold chosen out of fold. For small "
                        "clinical sets, where a held-out test split is a handful of people; 'loo' leaves one "
                        "participant out at a time (below ~20 participants)")
    p.add_argument("--cv-pred", metavar="PRED",
                   help="where --cv writes the out-of-fold predictions, a PRED for `cough report` "
                        "(default: MODEL-oof beside MODEL)")
    p.add_argument("--trace-dir", help="diagnostic: each worker appends one JSON line per step "
                                       "(pid, epoch, weights digest) to DIR/rank-N.jsonl")
    add_ray_arguments(p)


def _folds(text: str) -> int | str:
    """--cv's value: a number of folds from 2 to 50, or 'loo'."""
    return LEAVE_ONE_OUT if text.strip().lower() == LEAVE_ONE_OUT else integer(at_least=2, at_most=50)(text)


def run(args) -> dict:
    return train(args.shards, args.out, TrainSettings.from_args(args))
