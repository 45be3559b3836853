"""nightly: the incremental scoring run a scheduler starts every night.

Scores what arrived in SOURCE since the last run (``cough score``), writes that night's
operational report next to the predictions (``PRED/_reports/<run_id>/``, ignored by
Delta readers), and exits 1 when the night's error rate passes ``--max-error-rate``,
so the scheduler raises the alarm. Recipe (cron, on a machine that can reach the head):

    0 2 * * *  cd /opt/cough && RAY_AUTH_MODE=token .venv/bin/ray job submit \\
        --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.nightly s3://bucket/incoming --model s3://bucket/models/current \\
        --pred s3://bucket/pred --json >> /var/log/cough-nightly.log 2>&1

``ray job submit`` waits for the job and exits non-zero when it fails. The flags and the library call
are cough/commands/nightly.py's.
"""

if __name__ == "__main__":
    from cough.cli import run_module

    run_module("nightly")
