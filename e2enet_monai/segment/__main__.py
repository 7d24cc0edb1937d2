"""``python -m e2enet_monai.segment``: the same command as ``e2enet-segment``."""

from e2enet_monai.segment.command import cli

if __name__ == "__main__":
    cli()
