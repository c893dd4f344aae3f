"""``--figure``: each query with its top-k gallery images, in one PNG.

Where the query and a gallery image both come from ``<identity>/`` folders, the gallery
image is framed green when the identities match and red when not, as the evaluation's
ranked figure is; elsewhere there is no frame (nothing is known).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from ..data.image_list import read_image
from ..engine.cluster_grid import THUMBNAIL
from .search import Match

MAX_QUERIES = 20  # rows drawn


def draw_ranked(query_paths: Sequence[str], query_ids: Sequence[Optional[str]], results: Sequence[List[Match]],
                out_path: str, top: int = 10) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(len(query_paths), MAX_QUERIES)
    cols = 1 + min(top, max((len(r) for r in results[:rows]), default=0))
    fig, axes = plt.subplots(rows, cols, figsize=(0.8 * cols + 0.4, 1.45 * rows), squeeze=False)
    for q in range(rows):
        for col, ax in enumerate(axes[q]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col == 0:
                ax.imshow(read_image(query_paths[q]).resize(THUMBNAIL))
                ax.set_title("query", fontsize=7)
                continue
            if col - 1 >= len(results[q]):
                continue
            match = results[q][col - 1]
            ax.imshow(read_image(match.path).resize(THUMBNAIL))
            ax.set_title(f"{match.rank}: {match.similarity:.2f}", fontsize=6)
            if query_ids[q] is not None and match.identity is not None:
                colour = "tab:green" if match.identity == query_ids[q] else "tab:red"
                for spine in ax.spines.values():
                    spine.set(visible=True, color=colour, linewidth=2.5)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path
