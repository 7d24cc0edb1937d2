"""Applications on the bundles: the demo, running bundles through the real CLI, and the MONAI Label app."""
