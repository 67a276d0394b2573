"""Export targets, one file each; every module registers itself with ``@register_target``.

    kdmobile targets

``kdmobile.export.discover()`` imports every module here; a new target is one new file. Modules must
import their runtimes inside methods so that discovery stays cheap and a missing runtime is reported
as unavailable instead of breaking discovery.
"""
