"""``python -m cli``: the ``postroom`` command."""

import sys

from cli.main import main

sys.exit(main())
