"""Drawing for the Shapes world: class colours, fog, the background and shape masks.

Everything here is a pure function of its arguments. Colours are chosen so a
linear head on per-patch features can read both the class and the depth:
- class: each class owns a saturated hue, far from the grey-brown background;
- depth: every base colour (shapes, wall, floor) has the same channel sum
  `BASE_BRIGHTNESS`, and surfaces blend linearly toward the brighter
  `FOG_COLOR` by depth / fog_depth, so the pixel's R + G + B is an affine
  function of its depth whatever its class; apparent size (~1/depth) agrees.
Shapes have hard edges, so the segmentation and depth maps describe the RGB
frame exactly: every pixel shows one surface and carries that surface's label.
"""

from __future__ import annotations

import functools

import numpy as np

NUM_CLASSES = 5
CLASS_NAMES = ("background", "agent", "circle", "square", "triangle")
BACKGROUND, AGENT, CIRCLE, SQUARE, TRIANGLE = range(NUM_CLASSES)
DISTRACTOR_CLASSES = (CIRCLE, SQUARE, TRIANGLE)

# Base (fog-free) RGB of each shape class: saturated and far apart in hue, so
# that fog, jitter and the grey-brown background never make two classes meet.
# Channels stay within [20, 235] so colour jitter never clips (which would change the sum).
BASE_BRIGHTNESS = 400  # R + G + B of every base colour below
SHAPE_COLORS = {
    AGENT: (205, 175, 20),  # yellow diamond
    CIRCLE: (235, 85, 80),  # red
    SQUARE: (70, 235, 95),  # green
    TRIANGLE: (75, 95, 230),  # blue
}
WALL_COLOR = (120, 133, 147)  # top of the frame: a far, slate wall
FLOOR_COLOR = (160, 135, 105)  # bottom of the frame: a near, brown floor
FOG_COLOR = (240, 242, 248)

# Each shape's size constant, chosen so all classes cover the same area
# (pi * r^2) at the same depth: size tells depth, never class.
_SQUARE_HALF_SIDE = float(np.sqrt(np.pi) / 2)  # 0.886 r
_DIAMOND_HALF_DIAGONAL = float(np.sqrt(np.pi / 2))  # 1.253 r
_TRIANGLE_SIDE = float(np.sqrt(4 * np.pi / np.sqrt(3)))  # 2.693 r, equilateral
_TRIANGLE_HEIGHT = _TRIANGLE_SIDE * np.sqrt(3) / 2
# Half-extent of the bounding box around any shape, in radii (the triangle's apex is the farthest point).
_BOX_EXTENT = 1.6


def apparent_color(base: np.ndarray, depth: np.ndarray | float, fog_depth: float) -> np.ndarray:
    """Colour of a surface seen through linear fog.

    base: (..., 3) RGB in [0, 255]; depth: (...) metres (broadcast against base[..., 0]).
    Returns (..., 3) uint8: base blended toward FOG_COLOR by depth / fog_depth
    (pure fog at fog_depth and beyond).
    """
    fog = np.clip(np.asarray(depth, dtype=np.float64) / fog_depth, 0.0, 1.0)[..., None]
    color = np.asarray(base, dtype=np.float64) * (1.0 - fog) + np.asarray(FOG_COLOR, dtype=np.float64) * fog
    return np.clip(np.rint(color), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def background(frame_size: int, far_depth: float, near_depth: float, fog_depth: float) -> tuple[np.ndarray, np.ndarray]:
    """The empty scene: a wall-to-floor gradient whose colour and depth depend on the row only.

    Returns rgb (S, S, 3) uint8 and depth (S, S) float32, both read-only (they are
    cached and shared): depth goes linearly from `far_depth` at the top row to
    `near_depth` at the bottom row, and the colour is the row's wall/floor blend
    seen through fog at that depth.
    """
    rows = (np.arange(frame_size) + 0.5) / frame_size
    row_depth = far_depth + (near_depth - far_depth) * rows
    row_base = np.outer(1.0 - rows, WALL_COLOR) + np.outer(rows, FLOOR_COLOR)
    row_rgb = apparent_color(row_base, row_depth, fog_depth)
    rgb = np.repeat(row_rgb[:, None, :], frame_size, axis=1)
    depth = np.repeat(row_depth.astype(np.float32)[:, None], frame_size, axis=1)
    rgb.flags.writeable = False
    depth.flags.writeable = False
    return rgb, depth


def shape_mask(shape_class: int, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Which pixels a shape covers.

    dx: (1, w), dy: (h, 1) offsets in pixels of pixel centres from the shape's
    centre (y grows downward). Returns an (h, w) bool mask. All classes cover
    about pi * radius^2 pixels.
    """
    if shape_class == AGENT:
        return np.abs(dx) + np.abs(dy) <= _DIAMOND_HALF_DIAGONAL * radius
    if shape_class == CIRCLE:
        return dx * dx + dy * dy <= radius * radius
    if shape_class == SQUARE:
        half = _SQUARE_HALF_SIDE * radius
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape_class == TRIANGLE:
        # Apex up, centroid at the centre: the apex sits 2/3 of the height above it.
        apex = -2.0 / 3.0 * _TRIANGLE_HEIGHT * radius
        base = 1.0 / 3.0 * _TRIANGLE_HEIGHT * radius
        return (dy <= base) & (np.abs(dx) * np.sqrt(3.0) <= dy - apex)
    raise ValueError(f"class {shape_class} is not a shape class")


def draw_shapes(
    rgb: np.ndarray,
    segmentation: np.ndarray,
    depth: np.ndarray,
    centers: np.ndarray,
    radii: np.ndarray,
    classes: np.ndarray,
    colors: np.ndarray,
    depths: np.ndarray,
) -> None:
    """Paint shapes far to near over a frame that already holds the background, in place.

    rgb: (S, S, 3) uint8; segmentation: (S, S) integer; depth: (S, S) float32.
    centers: (K, 2) pixel coordinates (x, y); radii: (K,) pixels; classes: (K,);
    colors: (K, 3) uint8; depths: (K,) metres. Painting far to near makes each
    pixel end up with the nearest shape covering it, in all three maps.
    """
    size = rgb.shape[0]
    for index in np.argsort(-depths, kind="stable"):
        cx, cy = centers[index]
        extent = _BOX_EXTENT * radii[index]
        # Only the bounding box is evaluated, so cost grows with shape area, not frame area.
        c0, c1 = max(int(cx - extent), 0), min(int(cx + extent) + 2, size)
        r0, r1 = max(int(cy - extent), 0), min(int(cy + extent) + 2, size)
        if c0 >= c1 or r0 >= r1:
            continue
        dx = (np.arange(c0, c1) + 0.5 - cx)[None, :]
        dy = (np.arange(r0, r1) + 0.5 - cy)[:, None]
        mask = shape_mask(int(classes[index]), dx, dy, float(radii[index]))
        rgb[r0:r1, c0:c1][mask] = colors[index]
        segmentation[r0:r1, c0:c1][mask] = classes[index]
        depth[r0:r1, c0:c1][mask] = depths[index]
