"""The one error type for what a user must fix: a config, an option, a data file, a results folder.

Every such error of normbench is a UserError (ConfigError, DataError, DamagedResults, PlotError, ...), whose message
is one line naming what is wrong and what to do. The command line has one handler for them all (cli._Command):
`error: <message>` on stderr, exit code 2. From Python (normbench.api) they are raised as they are.
"""

import errno

# The errors of a write that found no room: a full disk, a full quota, a file-size limit.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(e: BaseException) -> bool:
    return getattr(e, "errno", None) in DISK_FULL


class UserError(ValueError):
    """Something the user must fix; the message is one line that names it and says what to do."""
