"""The rlrun operator (kopf): renders an RLRun into its children and reports its status."""
