"""The trainer role: torchrun ranks that turn step batches into optimizer steps and exported weights."""
