"""`python -m layerfuse` runs the command line."""

import sys

from layerfuse.cli.main import main

sys.exit(main())
