"""`python -m mpimager`: same as the `mpimager` console script."""

import sys

from mpimager.cli.main import main

sys.exit(main())
