"""`python -m auto_healer` is the `auto-healer` command."""

import sys

from auto_healer.cli import main

sys.exit(main())
