"""The latency/accuracy harness: ``kdmobile bench``, ``kdmobile check``, ``kdmobile baseline update``.

    kdmobile bench build/export --task email --data heldout -o build/report
    kdmobile bench my_export --data eval.npz --teacher teacher.pt2 -o my_report
    kdmobile check build/report --baseline baselines/email-x86_64-amd-epyc-2c.json

Modules (each imported only when used; this package imports nothing heavy):

- ``bench``: measure every artifact, the teacher and the eager student; write the report (``run_bench``);
- ``worker``: one measurement in its own process; ``timing``: interleaved latency, peak memory;
- ``browser``: the web bundle in headless Chromium via Playwright (``demo_app/bench.html``);
- ``report``: the versioned ``report.json`` schema, ``report.md`` and ``report.html`` (SVG plots);
- ``check`` + ``stats``: regressions against a baseline (rank test on same-run ratios); ``baseline``;
- ``machine``: CPU, cores, machine class, tool versions, the same-run matmul probe;
- ``integrity``: open an export folder trusting nothing (schema, paths inside it, sha256 of every artifact,
  one source checkpoint);
- ``tasks``: the evaluation set, generic metrics, a user's ``.npz`` data and ``.pt2``/artifact teacher (tasks
  themselves are plug-ins reached through ``kdmobile.task``; the harness imports none);
- ``eager``: load and call a checkpoint, a ``.pt2`` program or an exported artifact the same way.
"""
