"""MedicalNet 3D ResNets, SpotTune and the conventional fine-tuning strategies."""
