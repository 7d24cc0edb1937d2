"""Set up and start a MONAI Label server (``monaibundle`` app) serving this project's bundles, offline."""
