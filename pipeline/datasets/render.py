"""Deterministic procedural renderer of driving scenes (pure numpy, float32 ray casting).

World frame: x forward along the road, y left, z up, ground at z = 0. A scene is a
straight road (|y| < `road_half_width`, parking strips at its edges), raised sidewalks
with curbs, terrain, building facades with gaps, trees and hedges, garden walls,
parked cars, street lamps, poles, traffic signs and traffic lights, and sky. Every
surface carries a Cityscapes train id.

Primitives: one ground plane (z = 0), axis-aligned boxes, vertical capped cylinders
and spheres. `cast_rays` intersects arbitrary rays (camera pixels, LiDAR beams);
`render` shoots one ray per pixel centre of a pinhole camera (any K, size, pose) and
culls every primitive to its projected screen rectangle, so a 1600x900 frame costs
well under a second on one core.

Camera frame: x right, y down, z forward; `T_world_cam` maps camera points to the
world. Depth is the z-depth along the optical axis, inf for sky.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Cityscapes train ids (names: pipeline.cityscapes.NAMES).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 0, 1, 2, 3, 4, 5, 6, 7
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(8, 19)

# Primitive kinds. Geometry rows (6 floats): box [x0, y0, z0, x1, y1, z1];
# cylinder [cx, cy, r, z0, z1, 0]; sphere [cx, cy, cz, r, 0, 0].
BOX, CYLINDER, SPHERE = 0, 1, 2

# Materials (drive the procedural albedo and the night emission).
(M_GROUND, M_SIDEWALK, M_FACADE, M_CAR, M_GLASS, M_METAL, M_LAMP, M_SIGN, M_TLIGHT,
 M_FOLIAGE, M_BARK, M_WALL, M_FENCE) = range(13)
# Texture scale (m) and amplitude per material.
_TEX_SCALE = np.array([0.08, 0.5, 0.6, 0.5, 0.4, 0.3, 0.3, 0.2, 0.2, 0.15, 0.05, 0.15, 0.1], np.float32)
_TEX_AMP = np.array([0.35, 0.25, 0.25, 0.08, 0.1, 0.15, 0.05, 0.05, 0.05, 0.6, 0.4, 0.35, 0.3], np.float32)

GROUND_PATCH_M = 1.5          # scale (m) of the road's coarse patch texture (stains, repairs)
LANE_HALF_WIDTH = 2.5          # driving lanes |y| < 2.5 ...
PARKING_WIDTH = 2.0            # ... parking strips up to the curb at |y| = road_half_width
CURB_HEIGHT = 0.15
_NEAR = 0.05                   # camera near plane (m) for screen-space culling


@dataclass(frozen=True)
class Scene:
    """Static scene geometry. Arrays are aligned on the primitive axis (P rows)."""

    seed: int
    length_m: float
    road_half_width: float
    sidewalk_width: float
    kind: np.ndarray      # (P,) int8: BOX, CYLINDER, SPHERE
    geom: np.ndarray      # (P, 6) float32, see the primitive kinds
    aabb: np.ndarray      # (P, 6) float32 [x0, y0, z0, x1, y1, z1]
    label: np.ndarray     # (P,) uint8 Cityscapes train id
    material: np.ndarray  # (P,) int8
    color: np.ndarray     # (P, 3) float32 base albedo in [0, 1]
    aux: np.ndarray       # (P, 4) float32 material parameters (window grid, lit state, ...)
    lights: np.ndarray    # (L, 3) float32 street-lamp light positions


# ----------------------------------------------------------------------------- scene


class _Builder:
    """Accumulates primitives for `make_scene`."""

    def __init__(self):
        self.rows = []

    def box(self, lo, hi, label, mat, color, aux=(0, 0, 0, 0)):
        self.rows.append((BOX, (*lo, *hi), (*lo, *hi), label, mat, color, aux))

    def cylinder(self, cx, cy, r, z0, z1, label, mat, color, aux=(0, 0, 0, 0)):
        self.rows.append((CYLINDER, (cx, cy, r, z0, z1, 0), (cx - r, cy - r, z0, cx + r, cy + r, z1),
                          label, mat, color, aux))

    def sphere(self, cx, cy, cz, r, label, mat, color, aux=(0, 0, 0, 0)):
        self.rows.append((SPHERE, (cx, cy, cz, r, 0, 0), (cx - r, cy - r, cz - r, cx + r, cy + r, cz + r),
                          label, mat, color, aux))

    def arrays(self):
        cols = list(zip(*self.rows))
        return dict(
            kind=np.array(cols[0], np.int8), geom=np.array(cols[1], np.float32),
            aabb=np.array(cols[2], np.float32), label=np.array(cols[3], np.uint8),
            material=np.array(cols[4], np.int8), color=np.array(cols[5], np.float32),
            aux=np.array(cols[6], np.float32))


_FACADE_COLORS = np.array([[0.72, 0.66, 0.58], [0.62, 0.52, 0.45], [0.80, 0.78, 0.72], [0.55, 0.58, 0.62],
                           [0.68, 0.45, 0.38], [0.85, 0.80, 0.65], [0.50, 0.50, 0.52]], np.float32)
_CAR_COLORS = np.array([[0.75, 0.75, 0.78], [0.10, 0.10, 0.12], [0.60, 0.08, 0.08], [0.12, 0.20, 0.45],
                        [0.90, 0.90, 0.92], [0.35, 0.38, 0.40], [0.20, 0.35, 0.22]], np.float32)
_SIGN_COLORS = np.array([[0.10, 0.25, 0.70], [0.75, 0.10, 0.10], [0.90, 0.75, 0.10]], np.float32)


def _add_car(b, rng, x0, side, ymid):
    length, width = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9)
    color = tuple(_CAR_COLORS[rng.integers(len(_CAR_COLORS))] * rng.uniform(0.85, 1.1))
    y0 = ymid - width / 2
    b.box((x0, y0, 0.25), (x0 + length, y0 + width, 1.0), CAR, M_CAR, color)
    front, rear = (0.9, 0.6) if side > 0 else (0.6, 0.9)
    b.box((x0 + rear, y0 + 0.08, 1.0), (x0 + length - front, y0 + width - 0.08, rng.uniform(1.4, 1.55)),
          CAR, M_GLASS, color)
    return length


def _add_lamp(b, lights, x, side, rhw):
    y = side * (rhw + 0.4)
    h = 7.5
    grey = (0.45, 0.46, 0.48)
    b.cylinder(x, y, 0.09, 0.0, h, POLE, M_METAL, grey)
    arm_end = y - side * 1.6
    b.box((x - 0.05, min(y, arm_end), h - 0.1), (x + 0.05, max(y, arm_end), h), POLE, M_METAL, grey)
    b.box((x - 0.25, arm_end - 0.2, h - 0.3), (x + 0.25, arm_end + 0.2, h - 0.1), POLE, M_LAMP, (0.85, 0.85, 0.8))
    lights.append((x, arm_end, h - 0.4))


def _add_sign(b, rng, x, side, rhw):
    y = side * (rhw + 0.3)
    b.cylinder(x, y, 0.04, 0.0, 2.6, POLE, M_METAL, (0.5, 0.5, 0.5))
    color = tuple(_SIGN_COLORS[rng.integers(len(_SIGN_COLORS))])
    b.box((x - 0.03, y - 0.35, 2.0), (x, y + 0.35, 2.7), TRAFFIC_SIGN, M_SIGN, color)


def _add_traffic_light(b, rng, x, side, rhw):
    y = side * (rhw + 0.5)
    b.cylinder(x, y, 0.07, 0.0, 3.4, POLE, M_METAL, (0.3, 0.3, 0.3))
    state = float(rng.integers(3))          # 0 red, 1 amber, 2 green
    b.box((x - 0.3, y - 0.18, 3.3), (x, y + 0.18, 4.3), TRAFFIC_LIGHT, M_TLIGHT, (0.08, 0.08, 0.08),
          (state, 3.3, 4.3, y))


def _add_tree(b, rng, x, y, max_radius=2.4):
    trunk_h = rng.uniform(2.0, 3.0)
    r = rng.uniform(1.2, max_radius)
    b.cylinder(x, y, rng.uniform(0.12, 0.2), 0.0, trunk_h + 0.3 * r, VEGETATION, M_BARK, (0.30, 0.22, 0.15))
    green = (rng.uniform(0.15, 0.3), rng.uniform(0.35, 0.5), rng.uniform(0.1, 0.2))
    b.sphere(x, y, trunk_h + 0.8 * r, r, VEGETATION, M_FOLIAGE, green)


def _add_street_furniture(b, lights, rng, x_lo, x_hi, rhw):
    """Parked cars, street lamps, signs, traffic lights and sidewalk trees on both sides."""
    for side in (-1.0, 1.0):
        x = x_lo + rng.uniform(0, 6)
        while x < x_hi:                      # parked cars in the parking strip
            if rng.random() < 0.65:
                x += _add_car(b, rng, x, side, side * (rhw - 1.0)) + rng.uniform(0.8, 2.5)
            else:
                x += rng.uniform(3.0, 9.0)
        x = x_lo + rng.uniform(0, 25) + (12.0 if side > 0 else 0.0)
        while x < x_hi:
            _add_lamp(b, lights, x, side, rhw)
            x += rng.uniform(24, 34)
        x = x_lo + rng.uniform(3, 15)
        while x < x_hi:                      # trees on the sidewalk, away from lamps
            if min((abs(x - lx) for lx, _, _ in lights), default=99) > 3.0:
                _add_tree(b, rng, x, side * (rhw + rng.uniform(1.0, 1.4)), max_radius=1.9)
            x += rng.uniform(9, 22)
        x = x_lo + rng.uniform(10, 40)
        while x < x_hi:
            _add_sign(b, rng, x, side, rhw)
            x += rng.uniform(35, 70)
    x = x_lo + rng.uniform(40, 90)
    while x < x_hi:
        _add_traffic_light(b, rng, x, 1.0 if rng.random() < 0.5 else -1.0, rhw)
        x += rng.uniform(80, 140)


def _add_front_yard(b, rng, x0, x1, side, y_in, y_out):
    """Hedge, wall, fence or nothing between the sidewalk and a facade."""
    pick = rng.random()
    lo, hi = min(side * y_in, side * (y_in + 0.6)), max(side * y_in, side * (y_in + 0.6))
    if pick < 0.3:
        b.box((x0, lo, 0.0), (x1, hi, rng.uniform(0.8, 1.6)), VEGETATION, M_FOLIAGE,
              (0.18, rng.uniform(0.35, 0.45), 0.15))
    elif pick < 0.45:
        lo, hi = min(side * y_in, side * (y_in + 0.25)), max(side * y_in, side * (y_in + 0.25))
        b.box((x0, lo, 0.0), (x1, hi, rng.uniform(0.7, 1.3)), WALL, M_WALL, (0.65, 0.6, 0.55))
    elif pick < 0.6:
        lo, hi = min(side * y_in, side * (y_in + 0.05)), max(side * y_in, side * (y_in + 0.05))
        b.box((x0, lo, 0.0), (x1, hi, 1.2), FENCE, M_FENCE, (0.35, 0.33, 0.3))


def _add_buildings(b, rng, x_lo, x_hi, y_front):
    """Facades with gaps (trees in the gaps), a second row behind, on both sides."""
    for side in (-1.0, 1.0):
        x = x_lo
        while x < x_hi:
            if rng.random() < 0.3:           # gap: terrain and a tree or two
                gap = rng.uniform(5, 14)
                for _ in range(int(rng.integers(0, 3))):
                    _add_tree(b, rng, x + rng.uniform(1.5, gap - 1.5), side * (y_front + rng.uniform(2, 8)))
                x += gap
                continue
            w, depth = rng.uniform(8, 26), rng.uniform(8, 16)
            setback = rng.uniform(0.5, 4.0)
            y0 = y_front + setback
            if setback > 1.5:
                _add_front_yard(b, rng, x, x + w, side, y_front + 0.3, y0)
            color = tuple(_FACADE_COLORS[rng.integers(len(_FACADE_COLORS))] * rng.uniform(0.85, 1.1))
            aux = (rng.uniform(2.2, 3.6), rng.uniform(2.9, 3.6), rng.uniform(0.2, 0.5), rng.uniform(0.0, 1000.0))
            lo, hi = sorted((side * y0, side * (y0 + depth)))
            b.box((x, lo, 0.0), (x + w, hi, rng.uniform(5, 24)), BUILDING, M_FACADE, color, aux)
            x += w + rng.uniform(0.0, 1.0)
        x = x_lo + rng.uniform(0, 20)
        while x < x_hi:                      # background row
            w = rng.uniform(15, 40)
            color = tuple(_FACADE_COLORS[rng.integers(len(_FACADE_COLORS))] * rng.uniform(0.8, 1.0))
            aux = (rng.uniform(2.5, 3.5), rng.uniform(3.0, 3.6), rng.uniform(0.1, 0.4), rng.uniform(0.0, 1000.0))
            lo, hi = sorted((side * (y_front + 26), side * (y_front + 26 + rng.uniform(10, 20))))
            b.box((x, lo, 0.0), (x + w, hi, rng.uniform(15, 40)), BUILDING, M_FACADE, color, aux)
            x += w + rng.uniform(2, 15)


def make_scene(seed: int, length_m: float = 250.0) -> Scene:
    """A deterministic street scene; objects cover x in [-40, length_m + 40].

    Trajectories should stay in x in [0, length_m - 100] to keep content in view."""
    if not length_m > 0:
        raise ValueError(f"make_scene: length_m must be > 0, got {length_m}")
    rng = np.random.default_rng([int(seed), 7001])
    rhw = LANE_HALF_WIDTH + PARKING_WIDTH
    sw = float(rng.uniform(2.2, 3.2))
    x_lo, x_hi = -40.0, float(length_m) + 40.0
    b = _Builder()
    lights = []
    for side in (-1.0, 1.0):
        lo, hi = sorted((side * rhw, side * (rhw + sw)))
        b.box((x_lo, lo, 0.0), (x_hi, hi, CURB_HEIGHT), SIDEWALK, M_SIDEWALK, (0.62, 0.6, 0.57))
    _add_street_furniture(b, lights, rng, x_lo, x_hi, rhw)
    _add_buildings(b, rng, x_lo, x_hi, rhw + sw)
    return Scene(seed=int(seed), length_m=float(length_m), road_half_width=rhw, sidewalk_width=sw,
                 lights=np.array(lights, np.float32).reshape(-1, 3), **b.arrays())


def trajectory(scene: Scene, times_s, speed_mps: float = 8.0, seed: int = 0) -> list[np.ndarray]:
    """Ego poses (4x4 float64, world <- ego) at `times_s`: forward along +x from x = 5 m, in the
    centre of the scene's right driving lane.

    Closed-form in time, so any timestamps (camera, LiDAR) get consistent poses; the lateral
    position sways by ~0.2 m, which gives yaw changes of about a degree; z = 0."""
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng([int(seed), 7002])
    amp, freq, phase = rng.uniform(0.1, 0.3), rng.uniform(0.05, 0.15), rng.uniform(0, 2 * np.pi)
    w = 2 * np.pi * freq
    x = 5.0 + speed_mps * t
    lane_centre = -0.5 * (scene.road_half_width - PARKING_WIDTH)
    y = lane_centre + amp * np.sin(w * t + phase)
    yaw = np.arctan2(amp * w * np.cos(w * t + phase), speed_mps)
    poses = []
    for xi, yi, a in zip(x, y, yaw):
        T = np.eye(4)
        T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
        T[:3, 3] = (xi, yi, 0.0)
        poses.append(T)
    return poses


# ----------------------------------------------------------------------------- intersection


def _safe_inv(d):
    """1 / d with exact zeros replaced by a tiny value (keeps the slab test NaN-free)."""
    d = np.where(d == 0, np.float32(1e-20), d)
    return (np.float32(1.0) / d).astype(np.float32)


def _hit_box(g, o, d, inv):
    """Entry distance of rays into box g (inf on miss or when the origin is inside)."""
    tn = tf = None
    for a in range(3):
        t1 = (g[a] - o[a]) * inv[a]
        t2 = (g[a + 3] - o[a]) * inv[a]
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        tn = lo if tn is None else np.maximum(tn, lo)
        tf = hi if tf is None else np.minimum(tf, hi)
    return np.where((tn <= tf) & (tn > 0), tn, np.float32(np.inf))


def _hit_cylinder(g, o, d, a2):
    """Nearest positive hit of rays with a capped vertical cylinder (inf on miss)."""
    cx, cy, r, z0, z1 = g[0], g[1], g[2], g[3], g[4]
    ox, oy = o[0] - cx, o[1] - cy
    b = ox * d[0] + oy * d[1]
    c = ox * ox + oy * oy - r * r
    disc = b * b - a2 * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / a2
        z = o[2] + ts * d[2]
        side = np.where((disc >= 0) & (ts > 0) & (z >= z0) & (z <= z1), ts, np.inf)
        best = side
        for zc in (z0, z1):
            tc = (zc - o[2]) / d[2]
            px, py = ox + tc * d[0], oy + tc * d[1]
            cap = np.where((tc > 0) & (px * px + py * py <= r * r), tc, np.inf)
            best = np.minimum(best, cap)
    return best.astype(np.float32)


def _hit_sphere(g, o, d, a2):
    """Nearest positive hit of rays with a sphere (inf on miss or origin inside)."""
    ox, oy, oz = o[0] - g[0], o[1] - g[1], o[2] - g[2]
    b = ox * d[0] + oy * d[1] + oz * d[2]
    c = ox * ox + oy * oy + oz * oz - g[3] * g[3]
    disc = b * b - a2 * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a2
    return np.where((disc >= 0) & (t > 0) & (c > 0), t, np.float32(np.inf)).astype(np.float32)


def _hit_ground(o, d):
    """Hit of rays with the ground plane z = 0 (inf when looking up)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[2] / d[2]
    return np.where((d[2] < 0) & (t > 0), t, np.float32(np.inf)).astype(np.float32)


class _Rays:
    """Component planes of a ray bundle: origins o[3] (scalars or arrays), directions d[3]."""

    def __init__(self, o, d):
        self.o = o
        self.d = d
        self.inv = [_safe_inv(c) for c in d]
        self.a2 = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).astype(np.float32)
        self.a2xy = (d[0] * d[0] + d[1] * d[1]).astype(np.float32)

    def view(self, win):
        """The sub-bundle of a window (tuple of slices) of array-shaped rays."""
        sub = _Rays.__new__(_Rays)
        sub.o = [c if np.ndim(c) == 0 else c[win] for c in self.o]
        sub.d = [c[win] for c in self.d]
        sub.inv = [c[win] for c in self.inv]
        sub.a2, sub.a2xy = self.a2[win], self.a2xy[win]
        return sub


def _hit_primitive(scene, p, rays):
    g = scene.geom[p]
    k = scene.kind[p]
    if k == BOX:
        return _hit_box(g, rays.o, rays.d, rays.inv)
    if k == CYLINDER:
        return _hit_cylinder(g, rays.o, rays.d, rays.a2xy)
    return _hit_sphere(g, rays.o, rays.d, rays.a2)


def _trace(scene, rays, prims, windows=None):
    """Nearest hit over the ground and `prims`: (t, pid) with pid -2 ground, -1 miss."""
    t = _hit_ground(rays.o, rays.d)
    pid = np.where(np.isfinite(t), -2, -1).astype(np.int32)
    for i, p in enumerate(prims):
        win = windows[i] if windows is not None else Ellipsis
        sub = rays.view(win) if windows is not None else rays
        tp = _hit_primitive(scene, p, sub)
        tw, pw = t[win], pid[win]
        closer = tp < tw
        tw[closer] = tp[closer]
        pw[closer] = p
    return t, pid


def _aabb_distance(aabb, points):
    """Distance from each AABB (P, 6) to the nearest of `points` bounding box (3,) lo/hi."""
    lo, hi = points
    gap = np.maximum(np.maximum(aabb[:, :3] - hi, lo - aabb[:, 3:]), 0)
    return np.sqrt((gap ** 2).sum(1))


def cast_rays(scene: Scene, origins, directions, max_dist: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Intersect N rays with the scene.

    origins, directions: (N, 3) world coordinates (directions need not be unit length).
    Returns t (N,) float32, the distance along the unit direction (inf on miss or beyond
    `max_dist`), and labels (N,) uint8 Cityscapes train ids (SKY on miss). Surfaces are
    one-sided from outside: a ray starting inside a box or sphere does not hit it."""
    o = np.asarray(origins, dtype=np.float32)
    d = np.asarray(directions, dtype=np.float32)
    if o.ndim != 2 or o.shape[1] != 3 or d.shape != o.shape:
        raise ValueError(f"cast_rays: origins and directions must both be (N, 3), got {o.shape} and {d.shape}")
    norm = np.linalg.norm(d, axis=1)
    if not np.all(norm > 0):
        raise ValueError("cast_rays: directions must be non-zero")
    d = d / norm[:, None]
    if len(o) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.uint8)
    rays = _Rays([o[:, 0], o[:, 1], o[:, 2]], [d[:, 0], d[:, 1], d[:, 2]])
    prims = np.arange(len(scene.kind))
    if np.isfinite(max_dist):
        prims = prims[_aabb_distance(scene.aabb, (o.min(0), o.max(0))) <= max_dist]
    t, pid = _trace(scene, rays, prims)
    t[t > max_dist] = np.inf
    pid[~np.isfinite(t)] = -1
    tt = np.where(pid == -1, np.float32(0), t)
    return t, _labels(scene, pid, o[:, 0] + tt * d[:, 0], o[:, 1] + tt * d[:, 1])




def _camera_rays(T_world_cam, K, width, height):
    """World ray directions through pixel centres, scaled so that t equals z-depth."""
    Kinv = np.linalg.inv(np.asarray(K, dtype=np.float64))
    R = np.asarray(T_world_cam, dtype=np.float64)[:3, :3]
    M = (R @ Kinv).astype(np.float32)        # world dir = M @ [u, v, 1]
    u = np.arange(width, dtype=np.float32)[None, :]
    v = np.arange(height, dtype=np.float32)[:, None]
    d = [M[i, 0] * u + M[i, 1] * v + M[i, 2] for i in range(3)]
    return [np.ascontiguousarray(np.broadcast_to(c, (height, width)), dtype=np.float32) for c in d]


_BOX_EDGES = np.array([(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7),
                       (0, 4), (1, 5), (2, 6), (3, 7)])


def _screen_windows(aabb, T_cam_world, K, width, height):
    """Pixel rectangles (r0, r1, c0, c1) covering each AABB's projection; r0 == r1 if invisible."""
    P = len(aabb)
    ix = np.array([[0, 1, 2], [3, 1, 2], [0, 4, 2], [3, 4, 2], [0, 1, 5], [3, 1, 5], [0, 4, 5], [3, 4, 5]])
    corners = aabb[:, ix].astype(np.float64)                          # (P, 8, 3)
    pc = corners @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    a, b = pc[:, _BOX_EDGES[:, 0]], pc[:, _BOX_EDGES[:, 1]]           # (P, 12, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (_NEAR - a[..., 2]) / (b[..., 2] - a[..., 2])
    crosses = (s > 0) & (s < 1)
    cut = a + np.where(crosses, s, 0)[..., None] * (b - a)
    pts = np.concatenate([pc, cut], axis=1)                            # (P, 20, 3)
    valid = np.concatenate([pc[..., 2] >= _NEAR, crosses], axis=1)
    z = np.where(valid, pts[..., 2], 1.0)
    u = K[0, 0] * pts[..., 0] / z + K[0, 2]
    v = K[1, 1] * pts[..., 1] / z + K[1, 2]
    big = 1e9
    c0 = np.where(valid, u, big).min(1)
    c1 = np.where(valid, u, -big).max(1)
    r0 = np.where(valid, v, big).min(1)
    r1 = np.where(valid, v, -big).max(1)
    c0 = np.clip(np.floor(c0), 0, width).astype(np.int64)
    c1 = np.clip(np.ceil(c1) + 1, 0, width).astype(np.int64)
    r0 = np.clip(np.floor(r0), 0, height).astype(np.int64)
    r1 = np.clip(np.ceil(r1) + 1, 0, height).astype(np.int64)
    empty = ~valid.any(1) | (c1 <= c0) | (r1 <= r0)
    r1[empty] = r0[empty]
    return np.stack([r0, r1, c0, c1], 1).reshape(P, 4)


def _check_camera(T_world_cam, K, width, height):
    T = np.asarray(T_world_cam, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"render: T_world_cam must be a finite 4x4 matrix, got shape {T.shape}")
    if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"render: K must be a 3x3 pinhole matrix with positive focal lengths, got {K.tolist()}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"render: width and height must be >= 1, got {width}x{height}")
    return T, K


def trace_camera(scene: Scene, T_world_cam, K, width: int, height: int, max_dist: float = 150.0):
    """Per-pixel ray cast: (t, pid, dirs) with t the z-depth (inf = sky), pid the primitive
    id (-2 ground, -1 sky) and dirs the 3 (H, W) world direction planes (camera z = 1)."""
    T, K = _check_camera(T_world_cam, K, width, height)
    dirs = _camera_rays(T, K, width, height)
    origin = [np.float32(c) for c in T[:3, 3]]
    rays = _Rays(origin, dirs)
    T_cam_world = np.linalg.inv(T)
    win = _screen_windows(scene.aabb, T_cam_world, K, width, height)
    dist = _aabb_distance(scene.aabb, (T[:3, 3], T[:3, 3]))
    keep = np.nonzero((win[:, 1] > win[:, 0]) & (dist <= max_dist))[0]
    windows = [(slice(win[p, 0], win[p, 1]), slice(win[p, 2], win[p, 3])) for p in keep]
    t, pid = _trace(scene, rays, keep, windows)
    return t, pid, dirs


# ----------------------------------------------------------------------------- shading
# Shading works on flat per-pixel arrays. Lookup tables are indexed by pid + 2:
# row 0 = ground, row 1 = sky, rows 2.. = primitives.

_NOISE_SIZE = 512
_NOISE = np.random.default_rng(20240601).random(_NOISE_SIZE * _NOISE_SIZE, dtype=np.float32)


def _lut(values, ground, sky):
    """Per-primitive `values` with the ground and sky rows prepended (index pid + 2)."""
    head = np.empty((2,) + values.shape[1:], dtype=values.dtype)
    head[0], head[1] = ground, sky
    return np.concatenate([head, values])


def _value_noise(u, v, seed):
    """Bilinear value noise in [0, 1) on the unit lattice, from a fixed 512x512 table.

    `seed` (int32 scalar or array) shifts the lattice so surfaces get different patterns."""
    fu, fv = np.floor(u), np.floor(v)
    a, b = u - fu, v - fv
    a = a * a * (3 - 2 * a)
    b = b * b * (3 - 2 * b)
    m = _NOISE_SIZE - 1
    i = (fu.astype(np.int32) + seed * 97) & m
    j = (fv.astype(np.int32) + seed * 193) & m
    i1, j1 = (i + 1) & m, (j + 1) & m
    i *= _NOISE_SIZE
    i1 *= _NOISE_SIZE
    n00, n10 = _NOISE.take(i + j), _NOISE.take(i1 + j)
    n01, n11 = _NOISE.take(i + j1), _NOISE.take(i1 + j1)
    top = n00 + a * (n10 - n00)
    return top + b * (n01 + a * (n11 - n01) - top)


def _lane_marking(x, y):
    """Dashed centre line (3 m dash, 6 m period) and solid lane-edge lines."""
    ay = np.abs(y)
    centre = (ay < 0.075) & (np.mod(x, 6.0) < 3.0)
    edge = np.abs(ay - LANE_HALF_WIDTH) < 0.075
    return centre | edge


def _labels(scene, pid, x, y):
    """Train ids from primitive ids and ground hit positions (x, y only used on the ground)."""
    lab = _lut(scene.label, ROAD, SKY)[pid + 2]
    ground = pid == -2
    lab[ground & (np.abs(np.where(ground, y, 0)) >= scene.road_half_width)] = TERRAIN
    return lab


def reflectivity(scene: Scene, points, labels) -> np.ndarray:
    """LiDAR reflectivity in [0, 1] of world points with their train ids (lane markings shine)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    lab = np.asarray(labels).reshape(-1)
    if len(lab) != len(pts):
        raise ValueError(f"reflectivity: {len(pts)} points but {len(lab)} labels")
    table = np.array([0.08, 0.15, 0.2, 0.2, 0.25, 0.35, 0.3, 0.9, 0.12, 0.1, 0.0, 0.2, 0.2, 0.45,
                      0.4, 0.4, 0.4, 0.4, 0.4], np.float32)
    r = table[lab]
    r[(lab == ROAD) & _lane_marking(pts[:, 0], pts[:, 1])] = 0.7
    return r


class _Hits:
    """Flat per-pixel hit data: lut index, position, distance, normal, tangent coords (m)."""

    def __init__(self, scene, t, pid, d, cam):
        self.sky = pid == -1
        self.li = pid + 2
        tt = np.where(self.sky, np.float32(0), t)
        self.x, self.y, self.z = (np.float32(cam[a]) + tt * d[a] for a in range(3))
        self.dist = tt * np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        n = t.size
        self.nx, self.ny, self.nz = np.zeros(n, np.float32), np.zeros(n, np.float32), np.ones(n, np.float32)
        self.u, self.v = self.x.copy(), self.y.copy()            # ground: (x, y)
        kind = _lut(scene.kind, -1, -1)[self.li]
        geom = _lut(scene.geom, 0, 0)
        self._boxes(geom, np.nonzero(kind == BOX)[0])
        self._cylinders(geom, np.nonzero(kind == CYLINDER)[0])
        self._spheres(geom, np.nonzero(kind == SPHERE)[0])

    def _boxes(self, geom, sel):
        g = geom[self.li[sel]]
        q = (self.x[sel], self.y[sel], self.z[sel])
        near_lo = [np.abs(q[a] - g[:, a]) for a in range(3)]
        near_hi = [np.abs(q[a] - g[:, a + 3]) for a in range(3)]
        dist = [np.minimum(near_lo[a], near_hi[a]) for a in range(3)]
        axis = np.where((dist[0] <= dist[1]) & (dist[0] <= dist[2]), 0, np.where(dist[1] <= dist[2], 1, 2))
        for a, n in enumerate((self.nx, self.ny, self.nz)):
            n[sel] = np.where(axis == a, np.where(near_lo[a] < near_hi[a], -1.0, 1.0), 0.0)
        self.u[sel] = np.where(axis == 0, q[1], q[0])
        self.v[sel] = np.where(axis == 2, q[1], q[2])

    def _cylinders(self, geom, sel):
        g = geom[self.li[sel]]
        x, y, z = self.x[sel], self.y[sel], self.z[sel]
        rx, ry = (x - g[:, 0]) / g[:, 2], (y - g[:, 1]) / g[:, 2]
        top, bottom = np.abs(z - g[:, 4]) < 1e-3, np.abs(z - g[:, 3]) < 1e-3
        side = ~(top | bottom)
        self.nx[sel] = np.where(side, rx, 0)
        self.ny[sel] = np.where(side, ry, 0)
        self.nz[sel] = np.where(side, 0, np.where(top, 1.0, -1.0))
        self.u[sel] = np.arctan2(ry, rx) * g[:, 2]
        self.v[sel] = z

    def _spheres(self, geom, sel):
        g = geom[self.li[sel]]
        z = self.z[sel]
        nx, ny = (self.x[sel] - g[:, 0]) / g[:, 3], (self.y[sel] - g[:, 1]) / g[:, 3]
        self.nx[sel], self.ny[sel], self.nz[sel] = nx, ny, (z - g[:, 2]) / g[:, 3]
        self.u[sel] = np.arctan2(ny, nx) * g[:, 3]
        self.v[sel] = z


def _albedo(scene, h, fx, night):
    """Base colour and emission, each a list of 3 flat float32 channels."""
    mat = _lut(scene.material, M_GROUND, M_GROUND)[h.li]
    col = _lut(scene.color, 0, 0)[h.li]
    color = [np.ascontiguousarray(col[:, c]) for c in range(3)]
    emit = [np.zeros_like(color[0]) for _ in range(3)]
    scale = _TEX_SCALE[mat]
    amp = _TEX_AMP[mat] * np.clip(1.5 - h.dist / (fx * scale), 0, 1)
    seed = h.li.astype(np.int32) + np.int32(scene.seed % 65536)
    tex = _value_noise(h.u / scale, h.v / scale, seed) - 0.5
    tex += 0.5 * (_value_noise(h.u / (6 * scale), h.v / (6 * scale), seed + 1) - 0.5)
    ground = np.nonzero(mat == M_GROUND)[0]      # patches and stains, large enough to track at low resolution
    tex[ground] += 0.8 * (_value_noise(h.u[ground] / GROUND_PATCH_M, h.v[ground] / GROUND_PATCH_M,
                                       seed[ground] + 2) - 0.5)
    _ground_color(scene, np.nonzero(h.li == 0)[0], h, color)
    _sidewalk_color(np.nonzero(mat == M_SIDEWALK)[0], h, color)
    aux = _lut(scene.aux, 0, 0)
    _facade_color(np.nonzero(mat == M_FACADE)[0], h, aux, color, emit, night)
    _glass_color(np.nonzero(mat == M_GLASS)[0], color)
    _tlight_color(np.nonzero(mat == M_TLIGHT)[0], h, aux, color, emit)
    if night:
        lamp = np.nonzero(mat == M_LAMP)[0]
        for c, e in zip(emit, (3.0, 2.4, 1.6)):
            c[lamp] = e
    gain = 1 + amp * tex
    return [np.clip(c * gain, 0, 1) for c in color], emit


def _ground_color(scene, sel, h, color):
    x, y = h.x[sel], h.y[sel]
    road = np.abs(y) < scene.road_half_width
    mark = road & _lane_marking(x, y)
    for c, (r, t) in zip(color, ((0.33, 0.30), (0.33, 0.42), (0.34, 0.18))):
        c[sel] = np.where(mark, 0.85, np.where(road, r, t))


def _sidewalk_color(sel, h, color):
    joint = (np.mod(h.u[sel], 0.6) < 0.03) | (np.mod(h.v[sel], 0.6) < 0.03)
    f = np.where(joint, np.float32(0.75), np.float32(1.0))
    for c in color:
        c[sel] *= f


def _facade_color(sel, h, aux, color, emit, night):
    """Windows on a per-building grid (aux: window pitch, floor height, lit fraction, seed)."""
    a = aux[h.li[sel]]
    fu, fz = h.u[sel] / a[:, 0], h.v[sel] / a[:, 1]
    mu, mz = fu - np.floor(fu), fz - np.floor(fz)
    win = (mu > 0.25) & (mu < 0.75) & (mz > 0.3) & (mz < 0.8) & (fz > 1.0) & (h.nz[sel] == 0)
    idx = sel[win]
    for c, base in zip(color, (0.16, 0.2, 0.26)):
        c[idx] = base + 0.1 * mz[win]
    if night:
        cell = (np.floor(fu[win]).astype(np.int32) * 7919 + np.floor(fz[win]).astype(np.int32) * 104729
                + a[win, 3].astype(np.int32))
        lit = idx[_NOISE.take(cell & (_NOISE.size - 1)) < a[win, 2]]
        for e, val in zip(emit, (1.4, 1.05, 0.6)):
            e[lit] = val


def _glass_color(sel, color):
    for c, base in zip(color, (0.05, 0.07, 0.09)):
        c[sel] = c[sel] * 0.25 + base


def _tlight_color(sel, h, aux, color, emit):
    """Three lamps (red, amber, green, top to bottom) on the -x face; the aux[0]-th is lit.

    aux: (lit slot, z0, z1, y centre)."""
    a = aux[h.li[sel]]
    z, y = h.z[sel], h.y[sel]
    height = a[:, 2] - a[:, 1]
    rel = (a[:, 2] - z) / height * 3.0                            # 0..3 from the top
    slot = np.clip(np.floor(rel), 0, 2)
    dz = (rel - slot - 0.5) * height / 3.0
    disc = (dz ** 2 + (y - a[:, 3]) ** 2 < 0.11 ** 2) & (h.nx[sel] < -0.5)
    on = disc & (slot == a[:, 0])
    lamp_cols = np.array([[1.0, 0.15, 0.1], [1.0, 0.7, 0.1], [0.2, 1.0, 0.4]], np.float32)
    lit = lamp_cols[slot[on].astype(np.int64)]
    for k in range(3):
        color[k][sel[disc]] = 0.25
        color[k][sel[on]] = lit[:, k]
        emit[k][sel[on]] = 2.0 * lit[:, k]


_SUN = (np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])).astype(np.float32)


def _sky(dx, dy, dz, night):
    """Sky colour channels for (unnormalised) world directions of the sky pixels."""
    el = np.clip(dz / np.sqrt(dx * dx + dy * dy + dz * dz), -0.2, 1)
    if night:
        glow = np.exp(-np.maximum(el, 0) * 12)
        return [base + g * glow for base, g in ((0.010, 0.10), (0.014, 0.06), (0.030, 0.03))]
    w = np.sqrt(np.maximum(el, 0))
    h = np.maximum(dz, 0) + 0.15 * np.sqrt(dx * dx + dy * dy)
    clouds = np.clip(_value_noise(dx / h * 3, dy / h * 3, np.int32(5)) - 0.45, 0, 1) * 0.5 * w
    return [hz + (zn - hz) * w + clouds for hz, zn in ((0.82, 0.35), (0.87, 0.55), (0.93, 0.85))]


def _day_light(h, albedo):
    ndl = np.maximum(h.nx * _SUN[0] + h.ny * _SUN[1] + h.nz * _SUN[2], 0)
    light = 0.45 + 0.15 * h.nz + 0.75 * ndl
    haze = 1 - np.exp(-h.dist / np.float32(350.0))
    return [c * light + (hz - c * light) * haze for c, hz in zip(albedo, (0.8, 0.85, 0.9))]


def _point_light(h, pos):
    """(cos(n, l) / (d^2 + 1), unit direction to the light) for a point light at `pos`."""
    lx, ly, lz = pos[0] - h.x, pos[1] - h.y, pos[2] - h.z
    d2 = lx * lx + ly * ly + lz * lz + 1
    inv = 1 / np.sqrt(d2)
    lx, ly, lz = lx * inv, ly * inv, lz * inv
    ndl = np.maximum(h.nx * lx + h.ny * ly + h.nz * lz, 0)
    return ndl / d2, (lx, ly, lz)


def _night_light(scene, h, albedo, emit, T_world_cam):
    """Moonlight ambient + headlight cone + the 8 nearest street lamps (no shadows)."""
    cam, down, fwd = T_world_cam[:3, 3], T_world_cam[:3, 1], T_world_cam[:3, 2]
    light = [np.full(h.x.shape, 0.02 * k, np.float32) for k in (0.8, 0.9, 1.2)]
    axis = fwd + 0.08 * down
    axis = (axis / np.linalg.norm(axis)).astype(np.float32)
    fall, (lx, ly, lz) = _point_light(h, (cam + 0.8 * down + 2.0 * fwd).astype(np.float32))
    cos = -(axis[0] * lx + axis[1] * ly + axis[2] * lz)
    cone = np.clip((cos - 0.88) / 0.09, 0, 1) + 0.08 * np.clip((cos - 0.6) / 0.3, 0, 1)
    head = 700.0 * cone * fall
    for k, col in enumerate((1.0, 0.97, 0.9)):
        light[k] += col * head
    if len(scene.lights):
        near = np.argsort(np.linalg.norm(scene.lights - cam, axis=1), kind="stable")[:8]
        for q in scene.lights[near]:
            lamp = 14.0 * _point_light(h, q)[0]
            for k, col in enumerate((1.0, 0.72, 0.4)):
                light[k] += col * lamp
    return [a * li + e for a, li, e in zip(albedo, light, emit)]


def _tonemap_night(img, rng):
    """Exposure + Reinhard curve, then Gaussian read noise and shot noise (from `rng`)."""
    out = []
    for c in img:
        c = c * np.float32(1.8)
        c = c / (1 + c)
        noise = rng.standard_normal(c.shape, dtype=np.float32)
        shot = rng.standard_normal(c.shape, dtype=np.float32)
        out.append(c + 0.012 * noise + 0.025 * np.sqrt(c) * shot)
    return out


def render_scaled(scene: Scene, T_world_cam, K, width: int, height: int, night: bool = False,
                  rng: np.random.Generator | None = None, scale: float = 1.0):
    """`render` with `scale` x fewer rays per side, upsampled to (height, width): rgb bilinearly, depth
    and labels with nearest neighbour (OpenCV, pixel centres at integer coordinates, so the scaled
    camera is fx * s, cx' = (cx + 0.5) * s - 0.5). scale = 1 is `render` itself. The pipeline resizes
    frames to a few hundred pixels, so rays beyond that add time, not information."""
    if not 0 < scale <= 1:
        raise ValueError(f"render_scaled: scale must be in (0, 1], got {scale}")
    if scale == 1:
        return render(scene, T_world_cam, K, width, height, night, rng)
    w, h = max(16, round(width * scale)), max(16, round(height * scale))
    sx, sy = w / width, h / height
    K = np.array(K, dtype=np.float64)
    Ks = K.copy()
    Ks[0, 0], Ks[0, 2] = K[0, 0] * sx, (K[0, 2] + 0.5) * sx - 0.5
    Ks[1, 1], Ks[1, 2] = K[1, 1] * sy, (K[1, 2] + 0.5) * sy - 0.5
    rgb, depth, labels = render(scene, T_world_cam, Ks, w, h, night, rng)
    size = (int(width), int(height))
    return (cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST),
            cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST))


def render(scene: Scene, T_world_cam, K, width: int, height: int, night: bool = False,
           rng: np.random.Generator | None = None, max_dist: float = 150.0):
    """Render a pinhole camera (x right, y down, z forward; `T_world_cam` maps camera to world).

    Returns (rgb uint8 (H, W, 3), depth float32 (H, W) z-depth, inf for sky, labels uint8 (H, W)).
    Objects farther than `max_dist` are culled (the ground plane is not). Day: sun and sky
    light with procedural textures; night: ambient + headlights + street lamps + lit windows,
    with sensor noise drawn from `rng` (default: a generator seeded with 0)."""
    if rng is None:
        rng = np.random.default_rng(0)
    T = np.asarray(T_world_cam, dtype=np.float64)
    t, pid, dirs = trace_camera(scene, T, K, width, height, max_dist)
    H, W = int(height), int(width)
    d = [c.reshape(-1) for c in dirs]
    h = _Hits(scene, t.reshape(-1), pid.reshape(-1), d, T[:3, 3])
    albedo, emit = _albedo(scene, h, np.float32(np.asarray(K, dtype=np.float64)[0, 0]), night)
    img = _night_light(scene, h, albedo, emit, T) if night else _day_light(h, albedo)
    sky = np.nonzero(h.sky)[0]
    for c, s in zip(img, _sky(d[0][sky], d[1][sky], d[2][sky], night)):
        c[sky] = s
    if night:
        img = _tonemap_night(img, rng)
    rgb = np.empty((H * W, 3), np.uint8)
    for k, c in enumerate(img):
        rgb[:, k] = np.clip(c * 255 + 0.5, 0, 255)
    labels = _labels(scene, h.li - 2, h.x, h.y).reshape(H, W)
    depth = np.where(pid == -1, np.float32(np.inf), t).astype(np.float32)
    return rgb.reshape(H, W, 3), depth, labels
