"""The one error type for what a user must fix: a config, an option, a data file, a results folder.

Every such error of normbench is a UserError (ConfigError, DataError, DamagedResults, PlotError, ...), whose message
is one line naming what is wrong and what to do. The command line has one handler for them all (cli._Command):
`error: <message>` on stderr, exit code 2. From Python (normbench.api) they are raised as they are.
"""


class UserError(ValueError):
    """Something the user must fix; the message is one line that names it and says what to do."""
