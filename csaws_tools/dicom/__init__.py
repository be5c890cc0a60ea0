"""Stage 1, DICOM to PNG: discovery, header parsing, codec checks, VOI rendering, the batch stage."""
