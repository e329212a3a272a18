"""The rlrun runtime: what the pods of a run (and `rlrun local`) execute."""
