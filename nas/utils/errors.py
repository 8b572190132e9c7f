"""The one exception type that reaches a user as a single line.

Everything a user can get wrong (config, CLI, genotype, data path, checkpoint)
raises ``UserError`` with a message naming the problem and the fix. The entry
points catch it, print ``error: <message>`` and exit with status 2; a traceback
is shown only with ``--debug``.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
