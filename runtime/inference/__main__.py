from rlrun.runtime.inference.server import main

raise SystemExit(main())
