"""The benchmark's GeoTIFF (`make bench`): an aerial-looking orthophoto of the benchmark town as a
Cloud-Optimized GeoTIFF, to compare reading chips from a COG on S3 with the tile-server case.

EPSG:3857 on zoom 19's pixel grid (≈ 0.18 m a pixel at 52° N), covering the benchmark's 3 km
square around (52.2297 N, 21.0122 E) with a margin; JPEG (YCbCr, quality 85) in 256-px tiles,
like the benchmark's tiles; overviews down to 512 px (GDAL's COG driver). Ground, roofs and grain are seeded noise, so the
file is the same on every run. Writes OUT (the COG) and OUT.json: level 0's grid (left and top
in global pixels at zoom 19) and each tile's byte count, for the benchmark's "bytes read ≤ 2 ×
the compressed bytes of the tiles the chips cover".

Usage: python make_bench_cog.py OUT.tif
"""

import json
import math
import os
import sys

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.windows import Window
import rasterio.shutil

sys.path.insert(0, os.path.dirname(__file__))
from make_geotiff_fixtures import layout  # noqa: E402

ZOOM = 19
HALF_WORLD = math.pi * 6378137.0
M_PER_PX = 2 * HALF_WORLD / (256 * 2**ZOOM)
CENTRE = (52.2297, 21.0122)
# The town is a 3 km square; chips reach 64 px beyond a building.
HALF_SIDE_M = 1500 + 30
BLOCK = 2048


def pixel_of(lat, lon):
    world = 256 * 2**ZOOM
    return (lon + 180) / 360 * world, (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * world


def texture(rng, h, w):
    """Ground (smooth noise at several scales), roofs (rectangles), grain: ≈ 20–30 KB per
    256-px JPEG tile at q85, like the benchmark's tiles."""
    out = np.zeros((h, w), np.float32)
    for cell, amp in [(64, 0.45), (32, 0.2), (16, 0.15), (8, 0.1), (4, 0.1)]:
        grid = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
        up = np.repeat(np.repeat(grid, cell, 0), cell, 1)[:h, :w]
        out += amp * up
    rgb = np.stack([out * 120 + 40, out * 130 + 50, out * 100 + 30])
    for _ in range((h * w) // 4000):
        y, x = rng.integers(0, h - 40), rng.integers(0, w - 40)
        rh, rw = rng.integers(8, 40, 2)
        rgb[:, y : y + rh, x : x + rw] = rng.integers(60, 220, (3, 1, 1))
    rgb += rng.normal(0, 6, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def main(out):
    cx, cy = pixel_of(*CENTRE)
    half_px = HALF_SIDE_M / (M_PER_PX * math.cos(math.radians(CENTRE[0])))
    left = int((cx - half_px) // 256) * 256
    top = int((cy - half_px) // 256) * 256
    side = int(math.ceil(2 * half_px / 256)) * 256
    transform = Affine(M_PER_PX, 0, left * M_PER_PX - HALF_WORLD, 0, -M_PER_PX, HALF_WORLD - top * M_PER_PX)
    raw = out + ".raw.tif"
    rng = np.random.default_rng(0x7115_2024)
    with rasterio.open(raw, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                       crs=CRS.from_epsg(3857), transform=transform, tiled=True, blockxsize=256,
                       blockysize=256, compress="jpeg", jpeg_quality=95, photometric="ycbcr") as dst:
        for y in range(0, side, BLOCK):
            for x in range(0, side, BLOCK):
                h, w = min(BLOCK, side - y), min(BLOCK, side - x)
                dst.write(texture(rng, h, w), window=Window(x, y, w, h))
    # GDAL's COG driver: overviews to 512 px, JPEG YCbCr q85, 256-px tiles.
    rasterio.shutil.copy(raw, out, driver="COG", COMPRESS="JPEG", QUALITY=85, BLOCKSIZE=256,
                         OVERVIEW_RESAMPLING="AVERAGE")
    os.remove(raw)
    level0 = layout(out)[0]
    with open(out + ".json", "w") as f:
        json.dump({"zoom": ZOOM, "left": left, "top": top, "tile": 256, "across": side // 256,
                   "byte_counts": level0["byte_counts"]}, f)
    print(f"wrote {out}: {side} px square, {os.path.getsize(out) / 1e6:.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1])
