"""The one exception type users see.

Every error caused by user input (a bad file, a missing folder, a config typo) is raised as
``LatentDistillError`` with a one-line message that names the file or key. The CLI prints it
without a stack trace; library users can catch it.
"""


class LatentDistillError(ValueError):
    """A problem with the user's input, data, weights or config, explained in one line."""
