"""Training: losses, loops (motion, generator, joint), logs, resumable checkpoints."""
