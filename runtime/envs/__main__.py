from rlrun.runtime.envs.server import main

raise SystemExit(main())
