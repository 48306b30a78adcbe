"""The MGMT experiment: training one classifier, fusion, pretraining, report, predict."""
