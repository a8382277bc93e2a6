"""`python -m tools.bench`: see `tools.bench.command`."""

import sys

from tools.bench.command import main

sys.exit(main())
