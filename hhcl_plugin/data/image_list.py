"""Reading images and serving them as a torch ``Dataset`` in torchreid's batch format."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

from PIL import Image
from torch.utils.data import Dataset

from ..utils.errors import DatasetError

Item = Tuple[str, int, int]  # image path, (pseudo) label, camera id


def read_image(path: str) -> Image.Image:
    """Open an image as RGB, naming the file when it cannot be read.

    torchreid's own reader retries forever on unreadable files; one bad file must not
    hang a run.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path} ({e}); remove or replace the file, "
                           f"or set DATALOADER.ON_BAD_IMAGE skip") from None


class ImageListDataset(Dataset):
    """Images with a label and camera, in torchreid's batch format (``img``, ``pid``, ``camid``)."""

    def __init__(self, items: Sequence[Item], transform: Optional[Callable] = None) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, label, camid = self.items[index][:3]
        img = read_image(path)
        if self.transform is not None:
            img = self.transform(img)
        return {"img": img, "pid": label, "camid": camid, "impath": path, "index": index}
