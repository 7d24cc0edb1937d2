"""The main job of this project's README: synthetic data -> train -> evaluate -> inference through monai.bundle.

The same command is installed as ``e2enet-demo`` and runs as ``python -m e2enet_monai.apps.demo``."""

from e2enet_monai.apps.demo import cli

if __name__ == "__main__":
    cli()
