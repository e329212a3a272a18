"""Policy models shared by inference and trainer: the tiny offline VLM and prompt rendering."""
