"""Label names of the datasets our bundles serve (index = label value, 0 = background)."""

BTCV_LABELS = (
    "background", "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland",
)

AMOS_LABELS = (
    "background", "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder", "prostate/uterus",
)

# label map the BraTS bundle writes (and MONAI Label shows)
BRATS_LABELS = ("background", "necrotic tumor core", "peritumoral edema", "enhancing tumor")
