"""MGMT methylation from MRI: MedicalNet 3D ResNets and SpotTune adaptive fine-tuning."""
