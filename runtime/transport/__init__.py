"""Transport between roles: ZMQ micro-batch fan-out (trainer master -> data ranks) and the file-based
training-batch hand-off (orchestrator -> trainer master)."""
