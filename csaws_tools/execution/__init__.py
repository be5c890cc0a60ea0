"""Running per-file tasks: task contract, local process pool, Dask, shards, manifests, progress."""
