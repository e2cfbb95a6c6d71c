"""The one exception type for errors a user can cause and act on.

Bad files, wrong modality, CT without lungs, NaNs, mismatched geometry, missing weights: the core raises
:class:`UserError` with a one-line message that says what is wrong and what to do. The command-line tools
print ``error: <message>`` and exit with status 2; the Slicer modules show the message in a dialog.
Anything else that escapes is a bug in this project.
"""


class UserError(Exception):
    """An input or setting problem the user can fix; the message is shown to them as it is."""
