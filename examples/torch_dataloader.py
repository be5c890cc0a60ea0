"""Feed a patches file to a torch DataLoader, with or without complementary labels.

    csaws-prepare sample SAMPLE
    csaws-prepare merge-masks SAMPLE/CsawS -o MAPS
    csaws-prepare patches --images SAMPLE/CsawS/anonymized_dataset --masks MAPS/trainval -o patches.h5 --size 256
    python examples/torch_dataloader.py patches.h5
"""

import sys

from torch.utils.data import DataLoader

from csaws_tools.reader import TorchPatchDataset

path = sys.argv[1] if len(sys.argv) > 1 else "patches.h5"
for scheme in ("all", "binary"):  # 12 classes (with complementary labels) / cancer vs. background
    ds = TorchPatchDataset(path, scheme=scheme)
    loader = DataLoader(ds, batch_size=12, shuffle=True, num_workers=2)
    images, masks = next(iter(loader))  # float32 (12, 1, S, S) in [0, 1]; int64 (12, S, S)
    print(f"{scheme}: {len(ds)} patches, {ds.num_classes} classes, batch {tuple(images.shape)}, "
          f"mask ids {sorted(masks.unique().tolist())}")
