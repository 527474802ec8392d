"""`python -m mldht`: the same as the `mldht` command."""

import sys

from mldht.cli import main

sys.exit(main())
