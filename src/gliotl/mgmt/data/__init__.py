"""MRI cohorts: readers, preprocessing, cache, augmentation and the phantom cohort."""
