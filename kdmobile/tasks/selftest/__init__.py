"""The ``selftest`` task: a small deterministic email student and stand-in teacher the harness tests bench.

    python -m kdmobile.tasks.selftest build/selftest            # train both (seconds), print the paths

The models and helpers are in ``fixture``; ``plugin`` registers the task (imported lazily).
"""
