"""The score job: predict every recording under SOURCE with MODEL into PRED, incrementally.

:func:`score` checks MODEL and PRED (a Delta table this job owns), finds what tonight's run
must read (:mod:`.night`: SOURCE listed in Ray tasks, kept by an anti-join against PRED's
file ledger), streams it through two Ray Data stages (:mod:`.stages`: read, hash and
featurize with tasks, predict with an actor pool) and commits the rows chunk by chunk
(:mod:`.chunks`), to PRED (cough/tables/pred.py) and then the ledger (cough/tables/ledger.py).
:func:`plan` is ``--dry-run``: the same comparison without Ray. cough/commands/score.py
parses the flags. See docs/score.md.

One module per step: :mod:`.night` (what to read), :mod:`.stages` (the Ray stages),
:mod:`.chunks` (commits per chunk), :mod:`.plan` (the dry run), :mod:`.job` (the driver).
"""

from .job import score
from .plan import plan
from .settings import ScoreSettings

__all__ = ["ScoreSettings", "plan", "score"]
