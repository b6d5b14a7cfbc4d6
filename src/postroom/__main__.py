"""`python -m postroom` runs the postroom command."""

import sys

from postroom.cli.main import main

sys.exit(main())
