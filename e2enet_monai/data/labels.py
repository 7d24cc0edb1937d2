"""Label names of the datasets our bundles serve (index = label value, 0 = background)."""

BTCV_LABELS = (
    "background", "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland",
)

AMOS_LABELS = (
    "background", "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder", "prostate/uterus",
)

# network output channels of the BraTS bundle (sigmoid, overlapping regions)
BRATS_REGIONS = ("tumor core", "whole tumor", "enhancing tumor")
# label map the BraTS bundle writes (and MONAI Label shows)
BRATS_LABELS = ("background", "necrotic tumor core", "peritumoral edema", "enhancing tumor")
# input channel order of the BraTS bundle
BRATS_MODALITIES = ("T1c", "T1", "T2", "FLAIR")
