"""Allow ``python -m watchdog``, the same as the ``pipeline-watchdog`` command."""

import sys

from watchdog.cli import main

sys.exit(main())
