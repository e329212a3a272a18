import sys

from rlrun.runtime.orchestrator.main import main

sys.exit(main())
