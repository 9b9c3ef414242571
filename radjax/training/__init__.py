"""Training: configs, the run's model, optimizer and jitted steps (`run`, `steps`, `losses`,
`mixing`), the loop (`loop`), checkpoints, the workdir and what a run reports."""
