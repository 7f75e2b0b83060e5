"""`python -m ct_platform.cli ...`: the same as the `ct` script."""

import sys

from ct_platform.cli import main

sys.exit(main())
