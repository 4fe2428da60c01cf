"""Train a DBN or a baseline MLP from a YAML config: python train.py fit --config configs/quickstart.yaml"""

from dbn_init.cli import entry_point

if __name__ == "__main__":
    entry_point()
