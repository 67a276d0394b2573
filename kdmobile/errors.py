"""Typed errors shared across kdmobile. The CLI maps them to exit codes."""

from __future__ import annotations


class KDMobileError(Exception):
    """Base class for every error kdmobile raises on purpose."""


class UsageError(KDMobileError):
    """Bad input from the user: a bad config key, a missing file, a bad value. Exit code 2."""


class ConfigError(UsageError):
    """A config file or ``--set`` override names a key or value that does not exist."""


class CheckFailed(KDMobileError):
    """A check ran and found a regression or a mismatch. Exit code 1."""
