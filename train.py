"""Train from YAML: ``python train.py fit --config configs/fashion_mnist/mlp.yaml``."""

from deeptrain.cli import main

if __name__ == "__main__":
    main()
