"""``python -m actors.cli``."""

import sys

from actors.cli.quick import main

sys.exit(main())
