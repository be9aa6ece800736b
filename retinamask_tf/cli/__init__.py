"""The command line's modes, one module each; ``main.py`` parses the flags and dispatches.

Each module's ``run`` takes plain arguments (no flags), prints what it did and where its
outputs went, and returns the process exit code (or, for ``train`` and ``evaluate``, what
the next step needs). Errors a user can fix are raised as ``ConfigError``,
``DatasetError``, ``RunDirError`` or ``RunLockedError`` and printed by ``main.py``.
"""
