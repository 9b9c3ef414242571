"""Training: configs, the run's model, optimizer and jitted steps (`run`, `steps`, `losses`,
`mixing`), the loop (`loop`), checkpoints, the workdir and what a run reports; and what a
trained run is used for: scoring files (`scoring`), its decisions (`decisions`), evaluation,
explanation maps, the stress test and cross-validation."""
