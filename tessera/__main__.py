"""`python -m tessera ...` is the `tessera` command."""

import sys

from tessera.cli import main

if __name__ == "__main__":  # worker processes (forkserver, spawn) import this module without running it
    sys.exit(main())
