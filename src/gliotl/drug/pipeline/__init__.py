"""The drug experiment: step data, in-fold preprocessing, stages, report, predict."""
