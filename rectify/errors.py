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
