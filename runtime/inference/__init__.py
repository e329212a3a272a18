"""Inference role: the CPU engine + HTTP server (local runs, tests) and the vLLM launcher (GPU pods)."""
