"""The orchestrator role: drives a run step by step.

It asks env-workers for groups of rollouts, scores groups into advantages, writes one training batch per
step for the trainer, keeps the policy lag bounded, publishes progress and logs samples.
"""
