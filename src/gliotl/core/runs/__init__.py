"""Run directories, jobs and the executors that run them (local pool, Ray)."""
