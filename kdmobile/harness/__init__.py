"""The latency/accuracy harness: ``kdmobile bench``, ``kdmobile check``, ``kdmobile baseline update``.

    kdmobile bench build/export --task email --data heldout -o build/report
    kdmobile check build/report --baseline baselines/email-x86_64-amd-epyc-2c.json

Modules (each imported only when used; this package imports nothing heavy):

- ``bench``: measure every artifact, the teacher and the eager student; write the report (``run_bench``);
- ``worker``: one measurement in its own process; ``timing``: interleaved latency, peak memory;
- ``browser``: the web bundle in headless Chromium via Playwright (``demo_app/bench.html``);
- ``report``: the versioned ``report.json`` schema, ``report.md`` and ``report.html`` (SVG plots);
- ``check`` + ``stats``: regressions against a baseline (rank test on same-run ratios); ``baseline``;
- ``machine``: CPU, cores, machine class, tool versions, the same-run matmul probe;
- ``tasks``: what a task provides to the bench; ``selftest``: the small student the tests bench.
"""
