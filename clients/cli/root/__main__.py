"""`python -m samstream ...`: the same command line as the `samstream` script."""

import sys

from samstream.clients.cli import main

sys.exit(main())
