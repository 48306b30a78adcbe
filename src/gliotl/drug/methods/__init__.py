"""Every method compared on the target: the registry, classical baselines, linear and
prediction-level transfer, nested selection."""
