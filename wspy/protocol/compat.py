"""Spellings of wspy 0.9 kept as deprecated aliases (docs/porting.md maps the rest).

Each use warns with a `DeprecationWarning` that names today's spelling. The
aliases are only those an old name can keep without ambiguity: the close-code
constants, `Frame(..., mask=True)` and `SocketClosed(code, reason)`.
"""

from __future__ import annotations

import warnings

__all__ = ['RENAMED_CLOSE_CODES', 'renamed_close_code', 'warn_deprecated']

#: wspy 0.9's close-code constants and the names RFC 6455's registry gives them today.
RENAMED_CLOSE_CODES = {
    'CLOSE_NOACCEPT_DTYPE': 'CLOSE_UNSUPPORTED_DATA',     # 1003
    'CLOSE_POLICY': 'CLOSE_POLICY_VIOLATION',             # 1008
    'CLOSE_MESSAGE_TOOBIG': 'CLOSE_MESSAGE_TOO_BIG',      # 1009
    'CLOSE_MISSING_EXTENSIONS': 'CLOSE_MISSING_EXTENSION',  # 1010
    'CLOSE_UNABLE': 'CLOSE_INTERNAL_ERROR',               # 1011
}


def warn_deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that `old` (a wspy 0.9 spelling) is deprecated in favour of `new`.

    `stacklevel` 3 points at the caller of the function that calls this one.
    """
    warnings.warn(f'{old} is deprecated since wspy 1.0: use {new}', DeprecationWarning,
                  stacklevel=stacklevel)


def renamed_close_code(module: str, name: str, constants: dict[str, object]) -> object:
    """The value of a module attribute `name` that is a wspy 0.9 close-code constant.

    For a module's `__getattr__` (PEP 562): warns with the new name and returns
    its value from `constants` (the module's globals); any other name is an
    AttributeError, as without a `__getattr__`.
    """
    new = RENAMED_CLOSE_CODES.get(name)
    if new is None:
        raise AttributeError(f'module {module!r} has no attribute {name!r}')
    # 4: warn_deprecated <- this function <- the module's __getattr__ <- the user's code.
    warn_deprecated(f'wspy.{name}', f'wspy.{new}', stacklevel=4)
    return constants[new]
