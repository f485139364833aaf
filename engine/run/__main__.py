"""`python -m engine.run RUN_DIR`: the process of one run (engine.run.process)."""

import sys

from engine.run.process import main

sys.exit(main())
