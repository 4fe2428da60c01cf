"""The YAML experiments shipped with dbn_init: ``dbn-init fit --config quickstart.yaml`` finds them by name."""
