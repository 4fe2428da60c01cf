"""The tools around the library: the comparison runner (``python -m dbn_init.experiments.compare``),
its results file and report, the AIS log-likelihood command (``python -m
dbn_init.experiments.evaluate``) and the image-folder maker (``python -m
dbn_init.experiments.make_image_folder``). Nothing in :mod:`dbn_init` imports them."""
