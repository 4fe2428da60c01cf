"""Train a DBN or a baseline MLP from a YAML config: python train.py fit --config configs/quickstart.yaml"""

from dbn_init.cli import main

if __name__ == "__main__":
    main()
