"""What a researcher runs: configs, data, training and experiment modules."""
