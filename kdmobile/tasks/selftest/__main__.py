"""``python -m kdmobile.tasks.selftest [WORKDIR] [--update-baseline]`` (see ``fixture``)."""

import sys

from kdmobile.tasks.selftest.fixture import main

sys.exit(main())
