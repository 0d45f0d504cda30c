"""`UserError`: what every check and CLI of minibert raises for a mistake the user can fix (one `error:` line, exit
status 2, `minibert.cli.run_cli`). Its own module, importing nothing, so that the checks and the CLI helpers can
both use it without importing each other."""


class UserError(ValueError):
    """An error the user can fix; reported as one clear message and exit status 2.

    A `ValueError`, so that a library caller (`finetune.train.finetune(...)`, `minibert.convert`) can catch it as
    the bad value it is. Code that wraps other libraries' `ValueError`s into a `UserError` of its own lets this one
    through first (`except UserError: raise`)."""
