"""Env-worker role: environments (examples, prompts, rewards) and the rollout server in front of them."""
