"""Exit statuses of every ``omgate`` command, as shells and supervisors read them."""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_PROBLEMS = 1  # problems found, or a command that could not do its work
EXIT_USAGE = 2  # a usage or configuration error (or, for serve, an address it cannot use)
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: stopped by Ctrl-C, as a shell reports it
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: the reader went away (`| head`)


class UsageError(Exception):
    """What the command line gave cannot be used (a file an option names, say): exit status
    EXIT_USAGE, the message shown after the command's name. Configuration errors, which
    name their key and where it was set, are ConfigError."""
