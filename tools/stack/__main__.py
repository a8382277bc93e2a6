"""`python -m tools.stack run`: see `tools.stack.command`."""

import sys

from tools.stack.command import main

sys.exit(main())
