"""The exit codes every command documents (README "Exit codes")."""

EXIT_READY = 0
EXIT_NOT_READY = 1
EXIT_USAGE = 2  # usage error, or an invalid input file
EXIT_UNKNOWN = 3  # could not determine
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in vmxprobe, never a verdict
