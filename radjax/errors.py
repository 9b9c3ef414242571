"""The one exception type the command line turns into a message instead of a traceback."""


class UserError(ValueError):
  """Bad input from the user (a file, a directory, a setting); the message names it."""
