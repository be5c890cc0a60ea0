"""Stage 2, masks to label maps: class table, labels.json, label schemes, QuPath annotations, merge."""
