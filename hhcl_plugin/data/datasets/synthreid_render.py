"""Procedural rendering of pedestrian crops for the ``synthreid`` dataset.

The renderer separates two sources of variation on purpose:

* an :class:`Identity` holds everything that persists across cameras (clothing colours
  drawn from a palette with near-duplicates, clothing patterns, body proportions, hair,
  skin, bag, shoes), so identity is learnable from structure and not only from colour;
* a :class:`Camera` holds the nuisances a re-id model must become invariant to
  (illumination / white balance, background style, preferred viewpoint, blur, noise,
  occlusion rate), and each image adds its own jitter on top.

Everything is drawn with PIL at twice the output size and box-downsampled, which gives
cheap anti-aliasing; all randomness comes from the ``numpy.random.Generator`` passed in,
so the caller controls determinism.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT_H, OUT_W = 128, 64
_SS = 2  # supersampling factor of the drawing canvas
CH, CW = OUT_H * _SS, OUT_W * _SS

RGB = Tuple[int, int, int]

# Nuisance strengths. Per camera: white balance, exposure, scene colourfulness, clutter.
CAM_WB = 0.1
CAM_EXPOSURE = 0.15
SCENE_CHROMA = 20.0
CLUTTER = 1.0  # mean number of clutter shapes
# Body width relative to height. Detector crops are tight, so a person fills most of
# the crop width, as in Market-1501; thinner people leave the crop to the background.
PERSON_WIDTH = 1.5
# Per image (within one camera):
BG_SHIFT = 20.0  # colour shift of the visible part of the scene, 8-bit levels
EXPOSURE_JITTER = 0.15

# Clothing palette: dominated by dark / neutral tones with several near-duplicates
# (black vs charcoal, navy vs dark blue, grey vs dark grey...) so that colour alone is an
# ambiguous identity cue, as in real surveillance footage.
_CLOTH = np.array([
    (25, 25, 28), (48, 48, 54), (80, 82, 88), (128, 128, 134), (178, 178, 182), (224, 224, 218),
    (30, 34, 68), (42, 56, 108), (72, 96, 140), (132, 165, 208), (98, 28, 36), (172, 38, 42),
    (36, 66, 46), (96, 100, 56), (184, 164, 124), (102, 72, 46), (208, 184, 64), (212, 140, 160),
    (90, 56, 110), (212, 112, 44),
], dtype=np.float32)
_CLOTH_W = np.array([5, 4, 3, 3, 2, 3, 4, 3, 3, 1.5, 1.5, 1.5, 1.5, 1.5, 2.5, 2, 0.7, 0.7, 0.7, 0.7])
_SKIN = [(238, 200, 170), (225, 180, 145), (198, 150, 112), (160, 112, 78), (118, 80, 56), (84, 58, 42)]
_HAIR = [(20, 18, 18), (48, 34, 26), (92, 62, 38), (196, 164, 100), (150, 148, 146), (120, 52, 30)]
_HAIR_W = [5, 4, 2, 1, 1, 0.7]
_SHOES = [(22, 22, 24), (230, 230, 228), (96, 64, 40), (120, 120, 126), (170, 40, 40), (44, 66, 130)]
_SHOES_W = [4, 3, 2, 1.5, 0.7, 0.7]

UPPER_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "block", "jacket")
LOWER_STYLES = ("trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "medium", "long", "cap")
BAGS = ("none", "backpack", "shoulder")
VIEWS = ("front", "back", "side")
LOGO_SHAPES = ("circle", "square", "triangle", "diamond")


@dataclass(frozen=True)
class Identity:
    """Appearance that persists across cameras; colours are RGB in [0, 255]."""

    upper: RGB
    upper2: RGB
    upper_pattern: str
    pattern_period: float  # stripe / check period, in units of person height
    long_sleeves: bool
    logo: Optional[Tuple[str, RGB, float]]  # (shape, colour, size): only visible from the front
    lower: RGB
    lower2: RGB
    lower_style: str
    lower_stripe: bool
    skin: RGB
    hair: RGB
    hair_style: str
    shoes: RGB
    bag: str
    bag_color: RGB
    bag_side: int  # +1 / -1: which shoulder carries the bag
    height: float  # relative size in the crop
    build: float  # width multiplier (slim .. heavy)
    torso: float  # shoulder-to-hip length, fraction of height
    head: float  # head radius, fraction of height


@dataclass(frozen=True)
class Camera:
    """Nuisance parameters shared by every image of one camera."""

    gain: Tuple[float, float, float]  # white balance x exposure, per RGB channel
    gamma: float
    saturation: float
    blur: float  # Gaussian blur radius at output resolution
    noise: float  # sensor noise std, in 8-bit levels
    jpeg_quality: int
    wall: Tuple[float, float, float]
    floor: Tuple[float, float, float]
    horizon: float  # wall / floor boundary, fraction of height
    texture: str
    texture_period: float
    clutter_rate: float  # mean number of background clutter shapes
    occlusion_prob: float
    view_probs: Tuple[float, float, float]  # front, back, side
    scale: float  # mean person height, fraction of crop height


def _pick(rng: np.random.Generator, items: Sequence, weights: Optional[Sequence[float]] = None):
    p = None if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
    return items[int(rng.choice(len(items), p=p))]


def _jitter(rng: np.random.Generator, color: Sequence[float], amount: float) -> RGB:
    c = np.asarray(color, dtype=float) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _cloth(rng: np.random.Generator, avoid: Optional[Sequence[float]] = None, min_dist: float = 0.0) -> RGB:
    """A palette colour with a small personal offset, optionally contrasting with ``avoid``."""
    w = _CLOTH_W.copy()
    if avoid is not None:
        w[np.linalg.norm(_CLOTH - np.asarray(avoid, dtype=np.float32), axis=1) < min_dist] = 0
    return _jitter(rng, _CLOTH[rng.choice(len(_CLOTH), p=w / w.sum())], 12)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw the persistent appearance of one person."""
    upper = _cloth(rng)
    lower = _cloth(rng)
    logo = None
    if rng.random() < 0.35:
        logo = (_pick(rng, LOGO_SHAPES), _cloth(rng, upper, 110), float(rng.uniform(0.05, 0.08)))
    return Identity(
        upper=upper, upper2=_cloth(rng, upper, 90),
        upper_pattern=_pick(rng, UPPER_PATTERNS, (4, 1.5, 1, 1, 1.2, 1.3)),
        pattern_period=float(rng.uniform(0.035, 0.07)), long_sleeves=bool(rng.random() < 0.6), logo=logo,
        lower=lower, lower2=_cloth(rng, lower, 110),
        lower_style=_pick(rng, LOWER_STYLES, (6, 2, 1)), lower_stripe=bool(rng.random() < 0.2),
        skin=_jitter(rng, _pick(rng, _SKIN), 8), hair=_jitter(rng, _pick(rng, _HAIR, _HAIR_W), 8),
        hair_style=_pick(rng, HAIR_STYLES, (4, 2, 2, 1)), shoes=_jitter(rng, _pick(rng, _SHOES, _SHOES_W), 8),
        bag=_pick(rng, BAGS, (2, 1.2, 1)), bag_color=_cloth(rng), bag_side=int(rng.choice([-1, 1])),
        height=float(rng.uniform(0.9, 1.04)), build=float(rng.uniform(0.8, 1.25)),
        torso=float(rng.uniform(0.27, 0.34)), head=float(rng.uniform(0.058, 0.072)),
    )


def sample_camera(rng: np.random.Generator) -> Camera:
    """Draw one camera's nuisance profile (strong colour casts and a fixed scene style)."""
    temp = rng.uniform(-1, 1)  # warm <-> cool white balance
    tint = rng.uniform(-0.06, 0.06)  # green <-> magenta
    expo = rng.uniform(1 - CAM_EXPOSURE, 1 + CAM_EXPOSURE)
    gain = (expo * (1 + CAM_WB * temp), expo * (1 + tint), expo * (1 - CAM_WB * temp))
    views = rng.dirichlet((1.0, 1.0, 1.0)) * 0.7 + 0.1
    return Camera(
        gain=tuple(float(g) for g in gain), gamma=float(rng.uniform(0.9, 1.12)),
        saturation=float(rng.uniform(0.8, 1.1)), blur=float(rng.uniform(0.0, 0.8)),
        noise=float(rng.uniform(2, 9)), jpeg_quality=int(rng.integers(72, 96)),
        wall=tuple(float(v) for v in rng.uniform(60, 200, 1).repeat(3) + rng.uniform(-SCENE_CHROMA, SCENE_CHROMA, 3)),
        floor=tuple(float(v) for v in rng.uniform(50, 170, 1).repeat(3) + rng.uniform(-SCENE_CHROMA, SCENE_CHROMA, 3)),
        horizon=float(rng.uniform(0.5, 0.8)), texture=_pick(rng, ("plain", "tiles", "bricks", "windows", "blotches")),
        texture_period=float(rng.uniform(10, 28)), clutter_rate=float(rng.uniform(0.5, 2 * CLUTTER - 0.5)),
        occlusion_prob=float(rng.uniform(0.1, 0.35)), view_probs=tuple(float(v) for v in views / views.sum()),
        scale=float(rng.uniform(0.8, 0.9)),
    )


# ----------------------------------------------------------------------------- background
def _lowfreq(rng: np.random.Generator, amount: float) -> np.ndarray:
    """Smooth random field in [-amount, amount] (uneven lighting, dirt, foliage)."""
    small = Image.fromarray((rng.random((6, 3)) * 255).astype(np.uint8))
    return (np.asarray(small.resize((CW, CH), Image.BILINEAR), np.float32)[..., None] / 127.5 - 1) * amount


def _background(cam: Camera, rng: np.random.Generator) -> Image.Image:
    y = np.arange(CH, dtype=np.float32)[:, None, None]
    x = np.arange(CW, dtype=np.float32)[None, :, None]
    hz = CH * (cam.horizon + rng.uniform(-0.06, 0.06))
    shift = rng.uniform(-BG_SHIFT, BG_SHIFT, 3).astype(np.float32)  # the crop sees a different part of the scene
    wall = (np.asarray(cam.wall, np.float32) + shift) * (0.8 + 0.4 * y / CH)
    img = np.where(y < hz, wall, np.asarray(cam.floor, np.float32) + shift * 0.5) + np.zeros((1, CW, 1), np.float32)
    p, ox = cam.texture_period, rng.uniform(0, 100)
    if cam.texture == "tiles":
        img *= np.where((y >= hz) & (((x + ox) % p < 2) | (y % (p * 0.6) < 2)), 0.75, 1.0)
    elif cam.texture == "bricks":
        row = (y // (p * 0.5)) % 2
        img *= np.where((y < hz) & ((y % (p * 0.5) < 2) | ((x + ox + row * p / 2) % p < 2)), 1.25, 1.0)
    elif cam.texture == "windows":
        img = np.where((y < hz * 0.8) & ((x + ox) % (2 * p) < p), img * 0.55 + 40, img)
    elif cam.texture == "blotches":
        img *= 1 + _lowfreq(rng, 0.35)
    img *= 1 + _lowfreq(rng, 0.12)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    _clutter(ImageDraw.Draw(canvas), cam, rng)
    return canvas


def _clutter(draw: ImageDraw.ImageDraw, cam: Camera, rng: np.random.Generator) -> None:
    """Random objects and partial bystanders behind the person (pollute colour statistics)."""
    for _ in range(int(rng.poisson(cam.clutter_rate))):
        w, h = rng.uniform(0.15, 0.6) * CW, rng.uniform(0.05, 0.35) * CH
        x0, y0 = rng.uniform(-0.2, 1.0) * CW, rng.uniform(0.0, 0.95) * CH
        box = [x0, y0, x0 + w, y0 + h]
        color = _cloth(rng)
        if rng.random() < 0.5:
            draw.rectangle(box, fill=color)
        else:
            draw.ellipse(box, fill=color)
    if rng.random() < 0.2:  # a bystander cut by the crop border
        x = rng.choice([-0.15, 1.15]) * CW + rng.uniform(-0.1, 0.1) * CW
        top = rng.uniform(0.05, 0.3) * CH
        mid = top + 0.35 * CH
        draw.rectangle([x - 0.25 * CW, top, x + 0.25 * CW, mid], fill=_cloth(rng))
        draw.rectangle([x - 0.2 * CW, mid, x + 0.2 * CW, CH], fill=_cloth(rng))


# ----------------------------------------------------------------------------- person
def _limb(draw: ImageDraw.ImageDraw, p0, p1, w0: float, w1: float, fill) -> None:
    """Quadrilateral from ``p0`` (width ``w0``) to ``p1`` (width ``w1``)."""
    d = np.subtract(p1, p0, dtype=float)
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-6)
    pts = [p0 + n * w0 / 2, p1 + n * w1 / 2, p1 - n * w1 / 2, p0 - n * w0 / 2]
    draw.polygon([tuple(np.asarray(q, float)) for q in pts], fill=fill)


def _lerp(a, b, t: float) -> np.ndarray:
    return np.asarray(a, float) + (np.asarray(b, float) - np.asarray(a, float)) * t


def _upper_fill(ident: Identity, view: str, h: float, cx: float, sh_y: float, half_w: float) -> Image.Image:
    """Canvas-sized clothing texture in body coordinates, so patterns scale with the person."""
    yy = (np.arange(CH, dtype=np.float32)[:, None] - sh_y) / h
    xx = (np.arange(CW, dtype=np.float32)[None, :] - cx) / h
    p, kind = ident.pattern_period, ident.upper_pattern
    if kind == "hstripes":
        m = yy % p < p / 2
    elif kind == "vstripes":
        m = xx % p < p / 2
    elif kind == "checks":
        m = (yy % p < p / 2) ^ (xx % p < p / 2)
    elif kind == "block":
        m = yy < ident.torso * 0.4
    elif kind == "jacket" and view == "front":
        m = np.abs(xx) < 0.045
    elif kind == "jacket" and view == "side":
        m = xx > half_w / h - 0.025
    else:
        m = np.zeros((1, 1), bool)
    m = np.broadcast_to(m, (CH, CW))[..., None]
    arr = np.where(m, np.asarray(ident.upper2, np.uint8), np.asarray(ident.upper, np.uint8))
    return Image.fromarray(np.ascontiguousarray(arr))


def _draw_logo(draw: ImageDraw.ImageDraw, ident: Identity, h: float, cx: float, y: float) -> None:
    shape, color, size = ident.logo
    r = size * h / 2
    box = [cx - r, y - r, cx + r, y + r]
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y - r), (cx + r, y + r), (cx - r, y + r)], fill=color)
    else:
        draw.polygon([(cx, y - r), (cx + r, y), (cx, y + r), (cx - r, y)], fill=color)


def _draw_person(img: Image.Image, ident: Identity, view: str, h: float, cx: float, fy: float,
                 stride: float) -> None:
    """Draw a walking person seen from ``view``; side views face +x (the caller mirrors)."""
    draw = ImageDraw.Draw(img)
    side = view == "side"
    top = fy - h
    hr = ident.head * h
    head_c = np.array([cx + (0.02 * h if side else 0.0), top + hr])
    sh_y = top + 2 * hr + 0.022 * h
    hip_y = sh_y + ident.torso * h
    k = 0.58 if side else 1.0  # side views are narrower
    wide = ident.build * PERSON_WIDTH
    sw, hw = 0.27 * h * wide * k, 0.2 * h * wide * k
    lw, aw = 0.085 * h * wide, 0.05 * h * wide
    ankle = fy - 0.03 * h
    leg_col = ident.lower if ident.lower_style == "trousers" else ident.skin

    # long hair seen from the front hangs behind the shoulders
    if ident.hair_style == "long" and view == "front":
        draw.rectangle([head_c[0] - 1.1 * hr, head_c[1], head_c[0] + 1.1 * hr, sh_y + 0.1 * h], fill=ident.hair)
    # backpack behind the torso in side view
    if ident.bag == "backpack" and side:
        draw.rounded_rectangle([cx - sw / 2 - 0.1 * h, sh_y + 0.02 * h, cx - sw / 2 + 0.02 * h, hip_y - 0.02 * h],
                               radius=0.02 * h, fill=ident.bag_color)

    # legs: in side view one leg swings forward and one back
    if side:
        feet = [(cx - stride * 0.16 * h, ankle), (cx + stride * 0.16 * h, ankle)]
        hips = [(cx, hip_y), (cx, hip_y)]
    else:
        spread = 0.02 * h * stride
        feet = [(cx - hw / 4 - spread, ankle - 0.01 * h * stride), (cx + hw / 4 + spread, ankle)]
        hips = [(cx - hw / 4, hip_y), (cx + hw / 4, hip_y)]
    for i, (p0, p1) in enumerate(zip(hips, feet)):
        shade = 0.8 if side and i == 0 else 1.0  # far leg is in shadow
        _limb(draw, p0, p1, lw, lw * 0.7, tuple(int(c * shade) for c in leg_col))
        if ident.lower_style == "shorts":
            _limb(draw, p0, _lerp(p0, p1, 0.45), lw * 1.05, lw * 0.9, tuple(int(c * shade) for c in ident.lower))
        if ident.lower_stripe and ident.lower_style == "trousers":
            off = 0.0 if side else (lw * 0.35 if i else -lw * 0.35)
            _limb(draw, (p0[0] + off, p0[1]), (p1[0] + off * 0.7, p1[1]), lw * 0.18, lw * 0.14, ident.lower2)
        sx = 0.05 * h if side else 0.0
        draw.ellipse([p1[0] - lw * 0.55, p1[1] - 0.012 * h, p1[0] + lw * 0.55 + sx, p1[1] + 0.03 * h],
                     fill=ident.shoes)
    if not side:  # pelvis joins the legs
        draw.rectangle([cx - hw / 2, hip_y - 0.01 * h, cx + hw / 2, hip_y + 0.05 * h], fill=ident.lower)
    if ident.lower_style == "skirt":
        knee = hip_y + 0.45 * (ankle - hip_y)
        draw.polygon([(cx - hw / 2, hip_y - 0.01 * h), (cx + hw / 2, hip_y - 0.01 * h),
                      (cx + hw * 0.75, knee), (cx - hw * 0.75, knee)], fill=ident.lower)

    # torso and arms share one mask so the clothing pattern continues onto the sleeves
    mask = Image.new("L", img.size, 0)
    mdraw = ImageDraw.Draw(mask)
    mdraw.polygon([(cx - sw / 2, sh_y), (cx + sw / 2, sh_y), (cx + hw / 2, hip_y + 0.02 * h),
                   (cx - hw / 2, hip_y + 0.02 * h)], fill=255)
    mdraw.ellipse([cx - sw / 2, sh_y - 0.02 * h, cx + sw / 2, sh_y + 0.05 * h], fill=255)
    if side:
        arms = [((cx, sh_y + 0.02 * h), (cx + stride * 0.1 * h, hip_y + 0.05 * h))]
    else:
        arms = [((cx + s * (sw / 2 - aw / 2), sh_y + 0.02 * h), (cx + s * (sw / 2 + 0.01 * h), hip_y + 0.05 * h))
                for s in (-1, 1)]
    for a0, a1 in arms:
        _limb(mdraw, a0, a1, aw * 1.1, aw * 0.9, 255)
    img.paste(_upper_fill(ident, view, h, cx, sh_y, sw / 2), (0, 0), mask)
    for a0, a1 in arms:
        if not ident.long_sleeves:
            _limb(draw, _lerp(a0, a1, 0.4), a1, aw * 0.75, aw * 0.7, ident.skin)
        draw.ellipse([a1[0] - aw * 0.5, a1[1] - aw * 0.3, a1[0] + aw * 0.5, a1[1] + aw * 0.8], fill=ident.skin)

    # accessories
    bs = ident.bag_side * (-1 if view == "back" else 1)
    if ident.bag == "backpack" and view == "back":
        draw.rounded_rectangle([cx - sw * 0.38, sh_y + 0.02 * h, cx + sw * 0.38, hip_y - 0.02 * h],
                               radius=0.03 * h, fill=ident.bag_color)
    elif ident.bag == "backpack" and view == "front":
        for s in (-1, 1):
            _limb(draw, (cx + s * sw * 0.28, sh_y), (cx + s * sw * 0.3, sh_y + 0.18 * h), 0.025 * h, 0.025 * h,
                  ident.bag_color)
    elif ident.bag == "shoulder":
        bag_x = cx + (0.03 * h if side else -bs * (hw / 2 + 0.02 * h))
        _limb(draw, (cx + bs * sw * 0.35, sh_y), (bag_x, hip_y), 0.018 * h, 0.018 * h, ident.bag_color)
        draw.rectangle([bag_x - 0.06 * h, hip_y - 0.02 * h, bag_x + 0.06 * h, hip_y + 0.08 * h], fill=ident.bag_color)
    if ident.logo is not None and view == "front":
        _draw_logo(draw, ident, h, cx + 0.04 * h, sh_y + 0.09 * h)

    # neck, head and hair
    draw.rectangle([cx - 0.025 * h, head_c[1], cx + 0.025 * h, sh_y + 0.01 * h], fill=ident.skin)
    hbox = [head_c[0] - 0.82 * hr, head_c[1] - hr, head_c[0] + 0.82 * hr, head_c[1] + hr]
    draw.ellipse(hbox, fill=ident.hair if view == "back" else ident.skin)
    hair_col = ident.hair
    if ident.hair_style == "cap":  # a cap replaces the hair as the head's colour cue
        hair_col = ident.upper2
        draw.chord([hbox[0] - 0.1 * hr, hbox[1], hbox[2] + 0.1 * hr, head_c[1] + 0.2 * hr], 180, 360, fill=hair_col)
        if side:
            draw.rectangle([head_c[0], head_c[1] - 0.3 * hr, head_c[0] + 1.3 * hr, head_c[1] - 0.05 * hr],
                           fill=hair_col)
    elif view == "front":
        draw.chord([hbox[0], hbox[1], hbox[2], head_c[1] + 0.3 * hr], 180, 360, fill=hair_col)
        eye_y = head_c[1] + 0.1 * hr
        for s in (-1, 1):
            draw.ellipse([head_c[0] + s * 0.35 * hr - 1, eye_y - 1, head_c[0] + s * 0.35 * hr + 1, eye_y + 1],
                         fill=(40, 30, 30))
    elif side:
        draw.pieslice(hbox, 90, 300, fill=hair_col)
    if ident.hair_style in ("medium", "long") and view != "front":
        length = (0.06 if ident.hair_style == "medium" else 0.16) * h
        x0 = head_c[0] - (1.2 * hr if side else 0.9 * hr)
        x1 = head_c[0] - (0.2 * hr if side else -0.9 * hr)
        draw.rectangle([x0, head_c[1], x1, sh_y + length - 0.03 * h], fill=hair_col)


def _occlude(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """Objects between camera and person: a pole, a low obstacle or a passer-by at the border."""
    kind = rng.integers(3)
    color = _cloth(rng)
    if kind == 0:
        w, x = rng.uniform(0.06, 0.16) * CW, rng.uniform(0.15, 0.85) * CW
        draw.rectangle([x - w / 2, 0, x + w / 2, CH], fill=_jitter(rng, (90, 92, 96), 40))
    elif kind == 1:
        y = rng.uniform(0.62, 0.82) * CH
        draw.rectangle([rng.uniform(-0.5, 0.2) * CW, y, rng.uniform(0.8, 1.5) * CW, CH], fill=color)
    else:
        w = rng.uniform(0.2, 0.4) * CW
        x0 = -1 if rng.random() < 0.5 else CW - w
        draw.rectangle([x0, rng.uniform(0.0, 0.4) * CH, x0 + w, CH], fill=color)


def _photometric(img: Image.Image, cam: Camera, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img, np.float32) / 255.0
    gain = np.asarray(cam.gain, np.float32) * rng.uniform(1 - EXPOSURE_JITTER, 1 + EXPOSURE_JITTER) \
        * rng.uniform(0.95, 1.05, 3)
    ramp = 1 + rng.uniform(-0.25, 0.25) * (np.linspace(-1, 1, a.shape[1], dtype=np.float32)[None, :, None])
    a = a * gain * ramp
    gray = a.mean(axis=2, keepdims=True)
    a = np.clip(gray + (a - gray) * cam.saturation, 0, 1) ** cam.gamma
    a = a * 255 + rng.normal(0, cam.noise, a.shape)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


def render_image(ident: Identity, cam: Camera, rng: np.random.Generator) -> Image.Image:
    """Render one 128x64 RGB crop of ``ident`` as seen by ``cam``."""
    view = VIEWS[int(rng.choice(3, p=cam.view_probs))]
    img = _background(cam, rng)
    h = CH * cam.scale * ident.height * rng.uniform(0.9, 1.06)
    cx = CW / 2 + rng.normal(0, 0.06) * CW
    fy = CH - rng.uniform(-0.04, 0.07) * CH  # negative margin: feet cut by the detector box
    draw = ImageDraw.Draw(img)
    draw.ellipse([cx - 0.18 * h, fy - 0.02 * h, cx + 0.18 * h, fy + 0.03 * h], fill=tuple(
        int(v) for v in np.asarray(img.getpixel((int(np.clip(cx, 0, CW - 1)), CH - 1))) * 0.6))
    _draw_person(img, ident, view, h, cx, fy, stride=float(rng.uniform(0.2, 1.0)))
    if view == "side" and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < cam.occlusion_prob:
        _occlude(ImageDraw.Draw(img), rng)
    img = img.reduce(_SS)
    radius = cam.blur + rng.uniform(0, 0.5)
    if radius > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    return _photometric(img, cam, rng)
