"""weakseg: instance-segmentation training data from unlabeled images."""
