"""Errors in what a user gave (a file and line, a path, a setting): the message names it and what to do.

:class:`InputError` derives from Hydra's ``CompactHydraException``, so a script ends with the message alone
instead of a traceback through the library (``HYDRA_FULL_ERROR=1`` shows it). The concrete errors also keep
the builtin base they always had (``ValueError``, ``RuntimeError``), so library callers catch them as before.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException


class InputError(CompactHydraException):
    """Bad input the user can fix; the message says where (file:line, path or config key)."""


class ConfigError(InputError, ValueError):
    """A setting is missing or contradicts another; the message names the config key and a fix."""


class RunRefused(InputError):
    """The run stopped before writing anything because its outputs belong to another run (another writer holds
    them, or resuming would mix two configs). Hydra had already written this command's config into the run
    dir's ``.hydra/``; :class:`rectify.hydra_callbacks.KeepRunConfigOnRefusal` puts the other run's back."""
