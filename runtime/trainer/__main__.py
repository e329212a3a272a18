import sys

from rlrun.runtime.trainer.main import main

sys.exit(main())
