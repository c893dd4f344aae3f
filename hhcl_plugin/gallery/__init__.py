"""A persistent gallery of embedded images: built once, added to incrementally, searched by image, grouped.

``hhcl-gallery build|add|prune|search|group`` (``hhcl_plugin.tools.gallery``) and, from Python::

    from hhcl_plugin.gallery import Gallery
    with Gallery.open("my_gallery") as g:
        matches = g.search(["query.jpg"], k=10)      # or an (N, D) array of features
"""
from .store import Change, Gallery, GalleryError
from .metadata import ImageRecord

__all__ = ["Change", "Gallery", "GalleryError", "ImageRecord"]
