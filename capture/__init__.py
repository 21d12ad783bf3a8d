"""Where frames come from: capture files and live AF_PACKET rings, both yielding Batches."""
