"""`python -m dlp ...`: the command line (subcommands live in dlp/cli/)."""

import sys

from dlp.cli import main

if __name__ == "__main__":
    sys.exit(main())
