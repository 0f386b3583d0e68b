"""Drawing for :mod:`edge.data.demo_line` (private): belt, rails, parts, defects, lighting, noise.

Geometry is designed at 320x240 ("reference pixels") and scaled by k = min(W/320, H/240).
Random streams: [seed, index, tag]; the tags keep labels, scene, defect and the static layers
apart (non-zero: SeedSequence treats trailing zeros as absent). The defect has its own stream,
so a frame rendered with defect_probability=0 is the same scene without its defect.

Only numpy and OpenCV are used: the runtime's ``synthetic:`` source imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import cv2
import numpy as np


class Look(Protocol):
    """The settings a scene is drawn with (:class:`edge.data.demo_line.LineConfig` has them)."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def belt_speed(self) -> float: ...

    @property
    def vignette(self) -> float: ...

    @property
    def brightness(self) -> tuple[float, float]: ...

    @property
    def color_temperature(self) -> float: ...

    @property
    def contrast(self) -> tuple[float, float]: ...

    @property
    def blur_probability(self) -> float: ...

    @property
    def noise_sigma(self) -> tuple[float, float]: ...


TAG_LABELS, TAG_RENDER, TAG_STATIC, TAG_DEFECT = 1, 2, 3, 4
_SUB = 16  # OpenCV drawing with shift=4: sixteenth-of-a-pixel precision
_BELT_TINT = np.array([0.96, 1.06, 0.92], np.float32)  # dark green-grey rubber (BGR)
_STAIN_COLOURS = (
    np.array([0.30, 0.50, 0.95], np.float32),  # rust
    np.array([0.34, 0.33, 0.30], np.float32),  # oil
    np.array([0.22, 0.33, 0.48], np.float32),  # dark brown residue
)


@dataclass(frozen=True)
class _Static:
    """Per-(size, seed) layers, computed once: coordinate grids, belt tile, rails, noise."""

    k: float
    xs: np.ndarray  # (H, W) float32 x coordinates
    ys: np.ndarray
    belt: np.ndarray  # (H, 2L) luminance tile, periodic in x with period L (stored twice)
    belt_rgb: np.ndarray  # (3, H, 1) per-row colour gain of the belt (0 on the rails)
    rails: np.ndarray  # (3, H, W) rails, 0 on the belt
    streaks: np.ndarray  # (1024,) brushed-metal profile
    mottle: np.ndarray  # (H, W) smooth noise in [0, 1]
    noise: np.ndarray  # (3, H + 32, W + 32) standard normal sensor noise bank


def _wrap_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that wraps around in x (keeps a tile periodic)."""
    pad = int(3 * sigma) + 1
    b = cv2.GaussianBlur(np.pad(a, ((0, 0), (pad, pad)), mode="wrap"), (0, 0), sigma)
    return b[:, pad:-pad]


def _normalised(a: np.ndarray) -> np.ndarray:
    return ((a - a.mean()) / (a.std() + 1e-6)).astype(np.float32)


@lru_cache(maxsize=8)
def _static_layers(width: int, height: int, seed: int) -> _Static:
    rng = np.random.default_rng([seed, 0, TAG_STATIC])
    w, h = width, height
    k = min(w / 320, h / 240)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # belt tile, periodic in x: fine weave, transverse cleats, grain and wear blotches
    tile_w = 2 * w
    x = np.arange(tile_w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    n_weave = max(1, round(tile_w / (6 * k)))
    weave = np.sin(2 * np.pi * x * n_weave / tile_w) * np.sin(2 * np.pi * y / (6 * k))
    phase = (x * max(1, round(tile_w / (40 * k))) / tile_w) % 1.0
    cleats = np.where(phase < 0.09, -20.0, np.where(phase < 0.14, 9.0, 0.0))
    grain = _normalised(_wrap_blur(rng.standard_normal((h, tile_w)).astype(np.float32), 0.8 * k))
    wear = _normalised(_wrap_blur(rng.standard_normal((h, tile_w)).astype(np.float32), 10 * k))
    belt = (68 + 5 * weave + cleats + 5 * grain + 7 * wear).astype(np.float32)
    # rails above and below the belt, with the belt darkened where the rails shade it
    rail = max(8, round(0.075 * h))
    row = np.arange(h, dtype=np.float32)
    d = np.minimum(row - rail, h - rail - 1 - row)
    on_belt = d >= 0
    shade = np.where(on_belt, 1 - 0.45 * np.exp(-np.maximum(d, 0) / (5 * k)), 0.0)
    belt_rgb = (_BELT_TINT[:, None, None] * shade[None, :, None]).astype(np.float32)
    t = np.where(row < rail, row / rail, (h - 1 - row) / rail)  # 0 at the frame edge
    rail_lum = 95 + 80 * np.clip(np.sin(np.pi * np.clip(t, 0, 1)), 0, 1) ** 0.7 - 45 * (t > 0.85)
    rail_lum = (
        np.where(on_belt, 0.0, rail_lum)[:, None]
        + 4
        * _normalised(
            cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 3 * k)
        )
        * (~on_belt)[:, None]
    )
    rails = rail_lum[None] * np.array([1.02, 1.0, 0.97], np.float32)[:, None, None]
    streaks = _normalised(_wrap_blur(rng.standard_normal((1, 1024)).astype(np.float32), 1.2)[0])
    m = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 2.5 * k)
    mottle = (m - m.min()) / (m.max() - m.min() + 1e-6)
    noise = rng.standard_normal((3, h + 32, w + 32), dtype=np.float32)
    belt = np.concatenate([belt, belt], axis=1)
    layers = _Static(
        k,
        xs,
        ys,
        belt,
        belt_rgb,
        rails.astype(np.float32),
        streaks,
        mottle.astype(np.float32),
        noise,
    )
    for a in (xs, ys, belt, belt_rgb, layers.rails, streaks, layers.mottle, noise):  # shared
        a.flags.writeable = False
    return layers


def _pts(local: np.ndarray, m: np.ndarray, s: float) -> np.ndarray:
    """Local part coordinates (reference px) -> fixed-point frame coordinates for OpenCV."""
    p = local * s @ m[:, :2].T + m[:, 2]
    return np.round(p * _SUB).astype(np.int32)


def _part_alpha(part: str, m: np.ndarray, s: float, shape: tuple[int, int]) -> np.ndarray:
    """Anti-aliased coverage (H, W) uint8 0..255 of the part, holes cut out."""
    a = np.zeros(shape, np.uint8)
    aa = cv2.LINE_AA

    def circle(cx: float, cy: float, r: float, value: int) -> None:
        c = _pts(np.array([[cx, cy]], np.float32), m, s)[0]
        cv2.circle(a, (int(c[0]), int(c[1])), round(r * s * _SUB), value, -1, aa, 4)

    if part == "plate":
        hw, hh, ch = 62.0, 40.0, 7.0
        poly = [
            (-hw + ch, -hh),
            (hw - ch, -hh),
            (hw, -hh + ch),
            (hw, hh - ch),
            (hw - ch, hh),
            (-hw + ch, hh),
            (-hw, hh - ch),
            (-hw, -hh + ch),
        ]
        cv2.fillPoly(a, [_pts(np.array(poly, np.float32), m, s)], 255, aa, 4)
        for bx in (-hw + 13, hw - 13):
            for by in (-hh + 13, hh - 13):
                circle(bx, by, 5.0, 0)
    elif part == "disc":
        circle(0, 0, 56.0, 255)
        tab = [(40, -10), (69, -10), (69, 10), (40, 10)]
        cv2.fillPoly(a, [_pts(np.array(tab, np.float32), m, s)], 255, aa, 4)
        circle(0, 0, 21.0, 0)
    else:  # bracket: an L with legs 128 and 84, 36 thick, centred on its bounding box
        ell = np.array([(0, 0), (128, 0), (128, 36), (36, 36), (36, 84), (0, 84)], np.float32)
        cv2.fillPoly(a, [_pts(ell - (64, 42), m, s)], 255, aa, 4)
    return a


def _pick(rng: np.random.Generator, dist: np.ndarray, need: float) -> tuple[int, int]:
    """A random part pixel at least ``need`` px from the part's edge (or the deepest one)."""
    yy, xx = np.nonzero(dist >= need)
    if len(yy) == 0:
        yy, xx = np.nonzero(dist >= dist.max() * 0.9)
    j = int(rng.integers(len(yy)))
    return int(xx[j]), int(yy[j])


def _jagged(rng: np.random.Generator, cx: int, cy: int, r: float, jitter: float) -> np.ndarray:
    th = np.linspace(0, 2 * np.pi, 22, endpoint=False) + rng.uniform(0, 1)
    rad = r * (1 + rng.uniform(-jitter, jitter, th.size)) * (1 + 0.12 * np.cos(2 * th))
    p = np.stack([cx + rad * np.cos(th), cy + rad * np.sin(th)], 1)
    return np.round(p * _SUB).astype(np.int32)


def _draw_defect(
    rng: np.random.Generator, img: np.ndarray, defect: str, part_a: np.ndarray, st: _Static
) -> np.ndarray:
    """Paint the defect onto img (in place); return its coverage (H, W) float32 0..1."""
    k, shape = st.k, part_a.shape
    inside = (part_a > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    aa = cv2.LINE_AA
    canvas = np.zeros(shape, np.uint8)
    if defect == "scratch":
        best, best_area = canvas, -1.0
        for _ in range(12):
            cx, cy = _pick(rng, dist, 6 * k)
            length, th = rng.uniform(36, 72) * k, rng.uniform(0, np.pi)
            d, n = np.array([np.cos(th), np.sin(th)]), np.array([-np.sin(th), np.cos(th)])
            bend = rng.uniform(-0.12, 0.12) * length
            t = np.linspace(-0.5, 0.5, 7)[:, None]
            p = np.array([cx, cy]) + t * length * d + (1 - 4 * t**2) * bend * n
            width = max(3, round(rng.uniform(3, 5) * k))
            c = np.zeros(shape, np.uint8)
            cv2.polylines(c, [np.round(p * _SUB).astype(np.int32)], False, 255, width, aa, 4)
            area = float(np.count_nonzero((c > 127) & (inside > 0))) / (length * width)
            if area > best_area:
                best, best_area = c, area
            if area >= 0.8:
                break
        # a groove: one wall catches the light, the other is in shadow
        cov = best.astype(np.float32) / 255 * part_a
        e = max(1, round(k))
        wall = np.clip(np.roll(cov, (e, e), axis=(0, 1)) - cov, 0, 1) * part_a
        lit, shade = rng.uniform(215, 250), rng.uniform(18, 45)
        if rng.random() < 0.5:
            lit, shade = shade, lit
        img += (cov * 0.95) * (lit - img)
        img += (wall * 0.7) * (shade - img)
        cov = np.maximum(cov, wall)
    elif defect == "hole":
        cx, cy = _pick(rng, dist, 12 * k)
        r = max(6 * k, min(rng.uniform(7, 10.5) * k, float(dist[cy, cx]) - 4.5 * k))
        cv2.fillPoly(canvas, [_jagged(rng, cx, cy, r + rng.uniform(2.5, 4) * k, 0.15)], 255, aa, 4)
        core = np.zeros(shape, np.uint8)
        cv2.fillPoly(core, [_jagged(rng, cx, cy, r, 0.08)], 255, aa, 4)
        cov = canvas.astype(np.float32) / 255 * part_a
        core_a = core.astype(np.float32) / 255 * part_a
        burr = rng.uniform(205, 240) * (0.8 + 0.2 * st.mottle)
        img += (cov * 0.85) * (burr - img)
        img += core_a * (rng.uniform(6, 20) - img)
    else:  # stain: a soft irregular blob of a few overlapping circles
        cx, cy = _pick(rng, dist, 9 * k)
        big = rng.uniform(9, 13) * k
        cv2.circle(canvas, (cx * _SUB, cy * _SUB), round(big * _SUB), 255, -1, aa, 4)
        for _ in range(int(rng.integers(3, 7))):
            ox, oy = rng.normal(0, 0.6 * big, 2)
            rr = rng.uniform(0.4, 0.8) * big
            cv2.circle(
                canvas,
                (round((cx + ox) * _SUB), round((cy + oy) * _SUB)),
                round(rr * _SUB),
                255,
                -1,
                aa,
                4,
            )
        soft = cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), 2.0 * k)
        cov = np.clip((soft - 0.3) / 0.35, 0, 1) * part_a
        colour = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
        strength = cov * (0.7 + 0.3 * np.roll(st.mottle, int(rng.integers(64)), axis=1))
        img *= 1 - strength * (1 - colour[:, None, None])
    return cov


def render_scene(
    rng: np.random.Generator, config: Look, index: int, part: str, defect: str, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame: (image (H, W, 3) uint8 BGR, defect mask (H, W) uint8 0/1)."""
    w, h = config.width, config.height
    st = _static_layers(w, h, config.seed)
    k = st.k
    # background: the belt tile, advanced by the belt's travel, plus the static rails
    tile_w = st.belt.shape[1] // 2
    x0 = -round(index * config.belt_speed * k) % tile_w  # the belt moves to the right
    img = st.belt[:, x0 : x0 + w] * st.belt_rgb + st.rails  # (3, H, W) planes until the end
    # the part: pose, coverage, shadow, metal
    s = rng.uniform(0.88, 1.12) * k
    cx = w / 2 + rng.uniform(-0.12, 0.12) * w
    cy = h / 2 + rng.uniform(-0.05, 0.05) * h
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    m[:, 2] = (cx, cy)  # local (0, 0) is the part's centre
    part_a = _part_alpha(part, m, s, (h, w)).astype(np.float32) / 255
    small = cv2.resize(part_a, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    sh = cv2.resize(cv2.GaussianBlur(small, (0, 0), k), (w, h), interpolation=cv2.INTER_LINEAR)
    img *= 1 - 0.55 * np.roll(sh, (round(6 * k), round(4 * k)), axis=(0, 1))
    # metal, computed in the part's bounding box (plus a margin for the bevel) only
    bx, by, bw, bh = cv2.boundingRect((part_a > 0).astype(np.uint8))
    pad = round(4 * k) + 2
    x0, y0 = max(bx - pad, 0), max(by - pad, 0)
    x1, y1 = min(bx + bw + pad, w), min(by + bh + pad, h)
    dx, dy = st.xs[y0:y1, x0:x1] - cx, st.ys[y0:y1, x0:x1] - cy
    c, sn = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    lx, ly = (c * dx - sn * dy) / k, (sn * dx + c * dy) / k  # part frame, reference px
    gx, gy = rng.normal(0, 1, 2).tolist()
    g = rng.uniform(15, 35) / (math.hypot(gx, gy) + 1e-6) / 60
    lum = rng.uniform(125, 170) + g * gx * lx + g * gy * ly
    off = int(rng.integers(1024))
    if part == "disc":  # turned: concentric rings and a two-lobed sheen
        r2 = lx * lx + ly * ly
        idx = (np.sqrt(r2) * 2.3).astype(np.int32) + off
        a2 = rng.uniform(0, np.pi)
        lum += 8 * st.streaks[idx & 1023]
        lum += 22 * (math.cos(a2) * (lx * lx - ly * ly) + math.sin(a2) * 2 * lx * ly) / (r2 + 1)
    else:  # brushed along the part's long axis
        lum += 7 * st.streaks[(np.abs(ly + 600) * 1.7).astype(np.int32) + off & 1023]
    pa = part_a[y0:y1, x0:x1]
    ab = cv2.GaussianBlur(pa, (0, 0), 1.2 * k)
    e = max(1, round(2 * k))
    lum += 90 * (ab - np.roll(ab, (e, e), axis=(0, 1)))  # bevel: lit top-left, dark bottom-right
    tint = (1 + rng.uniform(-0.04, 0.04, (3, 1, 1))).astype(np.float32)
    roi = img[:, y0:y1, x0:x1]
    roi += pa * (lum * tint - roi)
    # the defect, on the part
    mask = np.zeros((h, w), np.uint8)
    if defect != "ok":
        defect_rng = np.random.default_rng([config.seed, index, TAG_DEFECT])
        mask = (_draw_defect(defect_rng, img, defect, part_a, st) > 0.5).astype(np.uint8)
    # lighting: gain, vignette, gradient, white balance, contrast
    vx, vy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    r2n = ((st.xs - vx) / w) ** 2 + ((st.ys - vy) / h) ** 2
    gx, gy = (config.vignette * rng.uniform(-0.6, 0.6, 2)).tolist()
    gain = rng.uniform(*config.brightness) * (1 - config.vignette * rng.uniform(0.5, 1.5) * r2n)
    gain *= 1 + gx * (st.xs / w - 0.5) + gy * (st.ys / h - 0.5)
    t = rng.uniform(-config.color_temperature, config.color_temperature)
    contrast = rng.uniform(*config.contrast)
    wb = np.array([1 - t, 1.0, 1 + t], np.float32)[:, None, None] * contrast
    img = img * (gain * wb) + 128 * (1 - contrast)
    if rng.random() < config.blur_probability:
        if rng.random() < 0.6:  # motion blur along the belt
            ksize = (int(rng.integers(3, 6)), 1)
            img = np.stack([cv2.blur(p, ksize) for p in img])
        else:
            sigma = rng.uniform(0.6, 1.1)
            img = np.stack([cv2.GaussianBlur(p, (0, 0), sigma) for p in img])
    oy, ox = rng.integers(32, size=2)
    img += rng.uniform(*config.noise_sigma) * st.noise[:, oy : oy + h, ox : ox + w]
    return cv2.merge(list(np.clip(img, 0, 255).astype(np.uint8))), mask
