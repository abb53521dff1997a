"""GeoTIFF fixtures for the tests (`make geotiff-fixtures`): the tests' synthetic world rendered
into Cloud-Optimized GeoTIFFs with rasterio and rio-cogeo, plus rio-tiler's reading of sample
chips from each, as reference.

The world is the one tests/it/support/tiles.rs serves as XYZ tiles: global pixel (gx, gy) at the
zoom below has colour (gx % 256, gy % 256, ((gx // 256 + gy // 256) * 37) % 256). A region of it
around Warsaw is written as:

- world_3857_{deflate,jpeg,lzw,zstd,webp}.tif: EPSG:3857 on the zoom's own pixel grid, 256-px
  internal tiles, overviews ×2 and ×4 (jpeg: YCbCr, with an internal mask hiding the region's
  left quarter);
- world_2180.tif: reprojected to EPSG:2180 (Poland's PUWG 1992), RGBA (alpha outside the data),
  Deflate;
- world_32634.tif: reprojected to UTM 34N, JPEG with an internal mask;
- world_nbgr_3857.tif: four bands in the order NIR, B, G, R (a NAIP-like file read with
  BANDS=4,3,2), LZW;
- strip_3857.tif: the same pixels in strips (not tiled): the reader must refuse it clearly;
- mosaic/q{0..3}.tif: the EPSG:3857 region in four overlapping quadrants, and mosaic/patch.tif: a
  small solid-colour file inside q0; mosaic/index.geojson lists them without dates (the first
  in the index wins an overlap: q0 before patch) and mosaic/stac.json as a STAC ItemCollection
  whose datetimes make the patch the newest (it wins its area).

fixtures.json describes it all for the tests: the zoom, the region, sample chips (the window
in global pixels, the centre as lat/lon) and each file's tile layout (offsets and byte counts
per level), so tests can tell which internal tiles a request read. ref/*.rgb are rio-tiler's
chips (`Reader.part` in EPSG:3857, bilinear), raw RGB, with ref/*.mask (255 = data).

Usage: python make_geotiff_fixtures.py OUT_DIR
"""

import json
import math
import os
import sys

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.warp import calculate_default_transform, reproject
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles
from rio_tiler.io import Reader

ZOOM = 17
HALF_WORLD = math.pi * 6378137.0
M_PER_PX = 2 * HALF_WORLD / (256 * 2**ZOOM)
# The region: 6 x 6 XYZ tiles at ZOOM around Warsaw's centre (52.2297 N, 21.0122 E).
CENTRE = (52.2297, 21.0122)
SIDE = 1536
CHIP = 64


def pixel_of(lat, lon):
    world = 256 * 2**ZOOM
    x = (lon + 180) / 360 * world
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * world
    return x, y


def point_at(x, y):
    world = 256 * 2**ZOOM
    lon = x / world * 360 - 180
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / world))))
    return lat, lon


cx, cy = pixel_of(*CENTRE)
LEFT = int(cx // 256) * 256 - SIDE // 2 + 128
TOP = int(cy // 256) * 256 - SIDE // 2 + 128
# Whole tiles: the region starts on a tile boundary.
LEFT -= LEFT % 256
TOP -= TOP % 256


def world(left, top, w, h):
    gx = np.arange(left, left + w, dtype=np.int64)[None, :].repeat(h, 0)
    gy = np.arange(top, top + h, dtype=np.int64)[:, None].repeat(w, 1)
    r = gx % 256
    g = gy % 256
    b = ((gx // 256 + gy // 256) * 37) % 256
    return np.stack([r, g, b]).astype(np.uint8)


def transform_3857(left, top):
    return Affine(M_PER_PX, 0, left * M_PER_PX - HALF_WORLD, 0, -M_PER_PX, HALF_WORLD - top * M_PER_PX)


def profile(name, **extra):
    p = dict(cog_profiles.get(name))
    p.update(blockxsize=256, blockysize=256)
    p.update(extra)
    return p


def write_cog(path, data, crs, transform, cog_profile, mask=None, photometric=None, alpha=False, colorinterp=None):
    """Writes `data` (bands, h, w) as a COG with overviews x2 and x4."""
    bands, h, w = data.shape
    meta = dict(driver="GTiff", width=w, height=h, count=bands, dtype="uint8", crs=crs, transform=transform)
    if photometric:
        meta["photometric"] = photometric
    if alpha:
        meta["alpha"] = "YES"
    with MemoryFile() as mem:
        with mem.open(**meta) as src:
            src.write(data)
            if colorinterp:
                src.colorinterp = colorinterp
            if mask is not None:
                src.write_mask(mask)
        with mem.open() as src:
            cog_translate(
                src,
                path,
                cog_profile,
                overview_level=2,
                overview_resampling="average",
                add_mask=mask is not None,
                in_memory=True,
                quiet=True,
                config={"GDAL_TIFF_INTERNAL_MASK": True},
            )


def reprojected(dst_crs, resolution):
    """The region warped into `dst_crs`: RGB and a validity mask (255 = data)."""
    src = world(LEFT, TOP, SIDE, SIDE)
    src_t = transform_3857(LEFT, TOP)
    left, top = src_t * (0, 0)
    right, bottom = src_t * (SIDE, SIDE)
    t, w, h = calculate_default_transform(
        CRS.from_epsg(3857), dst_crs, SIDE, SIDE, left, bottom, right, top, resolution=resolution
    )
    out = np.zeros((3, h, w), np.uint8)
    valid = np.zeros((h, w), np.uint8)
    for b in range(3):
        reproject(src[b], out[b], src_transform=src_t, src_crs=CRS.from_epsg(3857), dst_transform=t,
                  dst_crs=dst_crs, resampling=Resampling.bilinear)
    reproject(np.full((SIDE, SIDE), 255, np.uint8), valid, src_transform=src_t, src_crs=CRS.from_epsg(3857),
              dst_transform=t, dst_crs=dst_crs, resampling=Resampling.nearest, dst_nodata=0)
    return out, valid, t


def layout(path):
    """Each IFD's tile (or strip) offsets and byte counts, for request accounting in tests."""
    from rasterio import _env  # noqa: F401  (GDAL is loaded through rasterio)

    out = []
    with open(path, "rb") as f:
        data = f.read()
    import struct

    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    sizes = {3: 2, 4: 4, 16: 8}
    while ifd:
        (n,) = struct.unpack(order + "H", data[ifd : ifd + 2])
        tags = {}
        for i in range(n):
            e = ifd + 2 + 12 * i
            tag, typ, count = struct.unpack(order + "HHI", data[e : e + 8])
            size = sizes.get(typ, 1)
            raw = data[e + 8 : e + 12]
            if size * count > 4:
                (off,) = struct.unpack(order + "I", raw)
                raw = data[off : off + size * count]
            fmt = {2: "H", 4: "I", 8: "Q"}.get(size)
            if fmt and tag in (256, 257, 322, 323, 324, 325, 254, 273, 279):
                tags[tag] = list(struct.unpack(order + fmt * count, raw[: size * count]))
        out.append(
            {
                "width": tags[256][0],
                "height": tags[257][0],
                "subfile_type": tags.get(254, [0])[0],
                "tile_width": tags.get(322, [0])[0],
                "tile_height": tags.get(323, [0])[0],
                "offsets": tags.get(324, tags.get(273, [])),
                "byte_counts": tags.get(325, tags.get(279, [])),
            }
        )
        (ifd,) = struct.unpack(order + "I", data[ifd + 2 + 12 * n : ifd + 6 + 12 * n])
    return out


def ifd0_entries(data):
    """IFD 0's entries: tag -> (entry offset, type, count, value offset)."""
    import struct

    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    out = {}
    for i in range(n):
        e = ifd + 2 + 12 * i
        tag, typ, count = struct.unpack("<HHI", data[e : e + 8])
        size = {3: 2, 4: 4, 16: 8}.get(typ, 1) * count
        value = e + 8 if size <= 4 else struct.unpack("<I", data[e + 8 : e + 12])[0]
        out[tag] = (e, typ, count, value)
    return out


def bad_files(out_dir, region, t3857):
    """Files every reader must refuse or survive, each wrong in one way."""
    import struct
    import zlib

    bad = os.path.join(out_dir, "bad")
    os.makedirs(bad, exist_ok=True)
    with open(os.path.join(bad, "not_a_tiff.tif"), "wb") as f:
        f.write(b"<html><body>404 Not Found</body></html>")
    small = region[:, :512, :512]
    with rasterio.open(os.path.join(bad, "no_georef.tif"), "w", driver="GTiff", width=512, height=512, count=3,
                       dtype="uint8", tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(small)
    user_crs = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=19.37 +k=0.9993 +x_0=500000 +y_0=-5300000 "
                              "+ellps=GRS80 +units=m +no_defs")
    with rasterio.open(os.path.join(bad, "user_crs.tif"), "w", driver="GTiff", width=512, height=512, count=3,
                       dtype="uint8", crs=user_crs, transform=Affine(0.5, 0, 600000, 0, -0.5, 480000),
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(small)
    with rasterio.open(os.path.join(bad, "packbits.tif"), "w", driver="GTiff", width=512, height=512, count=3,
                       dtype="uint8", crs=CRS.from_epsg(3857), transform=t3857, tiled=True, blockxsize=256,
                       blockysize=256, compress="packbits") as dst:
        dst.write(small)
    with rasterio.open(os.path.join(bad, "float32.tif"), "w", driver="GTiff", width=512, height=512, count=3,
                       dtype="float32", crs=CRS.from_epsg(3857), transform=t3857, tiled=True, blockxsize=256,
                       blockysize=256) as dst:
        dst.write(small.astype("float32"))

    source = open(os.path.join(out_dir, "world_3857_deflate.tif"), "rb").read()
    entries = ifd0_entries(source)
    offsets_at, counts_at = entries[324][3], entries[325][3]

    def tile(i):
        (off,) = struct.unpack("<I", source[offsets_at + 4 * i : offsets_at + 4 * i + 4])
        (cnt,) = struct.unpack("<I", source[counts_at + 4 * i : counts_at + 4 * i + 4])
        return off, cnt

    # Declares 4,000,000,000 px across (its tile list is for 1,536).
    huge = bytearray(source)
    e, typ, _, _ = entries[256]
    struct.pack_into("<HI", huge, e + 2, 4, 1)
    struct.pack_into("<I", huge, e + 8, 4_000_000_000)
    open(os.path.join(bad, "huge.tif"), "wb").write(huge)

    # Level 0's tile 14 (column 2, row 2: the region's middle) points past the end of the file.
    past = bytearray(source)
    struct.pack_into("<I", past, offsets_at + 4 * 14, len(source) + 1000)
    open(os.path.join(bad, "offset_past_end.tif"), "wb").write(past)

    # Tile 14 holds a zlib stream of 64 MiB of zeros (a few tens of KiB compressed).
    bomb = zlib.compress(bytes(64 << 20), 9)
    off, cnt = tile(14)
    assert len(bomb) <= cnt, (len(bomb), cnt)
    bombed = bytearray(source)
    bombed[off : off + len(bomb)] = bomb
    struct.pack_into("<I", bombed, counts_at + 4 * 14, len(bomb))
    open(os.path.join(bad, "bomb.tif"), "wb").write(bombed)

    index = json.load(open(os.path.join(out_dir, "mosaic", "index.geojson")))
    index["features"][2]["geometry"] = None
    with open(os.path.join(bad, "broken_index.geojson"), "w") as f:
        json.dump(index, f)


def samples():
    """Sample chips: windows of CHIP px at ZOOM, inside the region, on its edges and outside."""
    picks = {
        "centre": (LEFT + SIDE // 2 - 40, TOP + SIDE // 2 - 40),
        "tile_corner": (LEFT + 512 - CHIP // 2, TOP + 768 - CHIP // 2),
        "east": (LEFT + SIDE - 300, TOP + 400),
        "south": (LEFT + 700, TOP + SIDE - 200),
        "masked": (LEFT + 60, TOP + 700),
        "mostly_outside": (LEFT + SIDE - CHIP // 4, TOP + 300),
        "outside": (LEFT + SIDE + 500, TOP + 300),
        "in_patch": (LEFT + 200, TOP + 200),
    }
    out = {}
    for name, (left, top) in picks.items():
        lat, lon = point_at(left + CHIP / 2 + 0.3, top + CHIP / 2 + 0.3)
        out[name] = {"left": left, "top": top, "size": CHIP, "zoom": ZOOM, "lat": lat, "lon": lon}
    # One chip a zoom coarser: read from the first overview.
    left, top = (LEFT + 600) // 2, (TOP + 500) // 2
    lat, lon = point_at(2 * (left + CHIP / 2 + 0.3), 2 * (top + CHIP / 2 + 0.3))
    out["zoom16"] = {"left": left, "top": top, "size": CHIP, "zoom": ZOOM - 1, "lat": lat, "lon": lon}
    return out


def reference(path, name, sample):
    left, top, size = sample["left"], sample["top"], sample["size"]
    m = M_PER_PX * 2 ** (ZOOM - sample["zoom"])
    bbox = (
        left * m - HALF_WORLD,
        HALF_WORLD - (top + size) * m,
        (left + size) * m - HALF_WORLD,
        HALF_WORLD - top * m,
    )
    with Reader(path) as r:
        img = r.part(bbox, dst_crs=CRS.from_epsg(3857), bounds_crs=CRS.from_epsg(3857), width=size, height=size,
                     resampling_method="bilinear", reproject_method="bilinear", indexes=(1, 2, 3))
    rgb = np.ascontiguousarray(np.transpose(img.data.astype(np.uint8), (1, 2, 0)))
    return rgb.tobytes(), np.ascontiguousarray(img.mask.astype(np.uint8)).tobytes()


def main(out_dir):
    os.makedirs(os.path.join(out_dir, "ref"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "mosaic"), exist_ok=True)
    region = world(LEFT, TOP, SIDE, SIDE)
    t3857 = transform_3857(LEFT, TOP)
    files = {}

    for codec in ["deflate", "lzw", "zstd", "webp"]:
        extra = {"quality": 100} if codec == "webp" else {}
        if codec == "webp":
            extra["webp_lossless"] = True
        path = f"world_3857_{codec}.tif"
        write_cog(os.path.join(out_dir, path), region, CRS.from_epsg(3857), t3857, profile(codec, **extra))
        files[path] = {"crs": 3857}

    mask = np.full((SIDE, SIDE), 255, np.uint8)
    mask[:, : SIDE // 4] = 0
    write_cog(os.path.join(out_dir, "world_3857_jpeg.tif"), region, CRS.from_epsg(3857), t3857,
              profile("jpeg", quality=90), mask=mask)
    files["world_3857_jpeg.tif"] = {"crs": 3857}

    rgb, valid, t = reprojected(CRS.from_epsg(2180), 0.75)
    rgba = np.concatenate([rgb, valid[None]], 0)
    write_cog(os.path.join(out_dir, "world_2180.tif"), rgba, CRS.from_epsg(2180), t, profile("deflate"),
              photometric="RGB", alpha=True)
    files["world_2180.tif"] = {"crs": 2180}

    rgb, valid, t = reprojected(CRS.from_epsg(4326), 0.75 / 111320)
    rgb[:, valid == 0] = 0
    write_cog(os.path.join(out_dir, "world_4326.tif"), rgb, CRS.from_epsg(4326), t, profile("deflate"))
    files["world_4326.tif"] = {"crs": 4326}

    # GDAL_NODATA=0: the region's left quarter is zeros, "no data".
    blank = region.copy()
    blank[:, :, : SIDE // 4] = 0
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=SIDE, height=SIDE, count=3, dtype="uint8", crs=CRS.from_epsg(3857),
                      transform=t3857, nodata=0) as src:
            src.write(blank)
        with mem.open() as src:
            cog_translate(src, os.path.join(out_dir, "world_3857_nodata.tif"), profile("deflate"),
                          overview_level=2, in_memory=True, quiet=True)
    files["world_3857_nodata.tif"] = {"crs": 3857}

    rgb, valid, t = reprojected(CRS.from_epsg(32634), 0.75)
    write_cog(os.path.join(out_dir, "world_32634.tif"), rgb, CRS.from_epsg(32634), t,
              profile("jpeg", quality=90), mask=valid)
    files["world_32634.tif"] = {"crs": 32634}

    nir = np.full((1, SIDE, SIDE), 200, np.uint8)
    nbgr = np.concatenate([nir, region[2:3], region[1:2], region[0:1]], 0)
    write_cog(os.path.join(out_dir, "world_nbgr_3857.tif"), nbgr, CRS.from_epsg(3857), t3857,
              profile("lzw", photometric="MINISBLACK"), colorinterp=[ColorInterp.gray] + [ColorInterp.undefined] * 3)
    files["world_nbgr_3857.tif"] = {"crs": 3857, "bands": 4}

    with rasterio.open(os.path.join(out_dir, "strip_3857.tif"), "w", driver="GTiff", width=SIDE, height=SIDE,
                       count=3, dtype="uint8", crs=CRS.from_epsg(3857), transform=t3857, tiled=False) as dst:
        dst.write(region)

    # The mosaic: four quadrants overlapping by 64 px, and a small newer patch inside q0.
    half = SIDE // 2
    quads = []
    for i, (qx, qy) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        left = LEFT + qx * half - (64 if qx else 0)
        top = TOP + qy * half - (64 if qy else 0)
        w = half + 64
        path = f"q{i}.tif"
        write_cog(os.path.join(out_dir, "mosaic", path), world(left, top, w, w), CRS.from_epsg(3857),
                  transform_3857(left, top), profile("deflate"))
        quads.append((path, left, top, w, f"2024-0{i + 1}-01T00:00:00Z"))
    patch_left, patch_top, patch_w = LEFT + 128, TOP + 128, 256
    solid = np.zeros((3, patch_w, patch_w), np.uint8)
    solid[0], solid[1], solid[2] = 250, 20, 10
    write_cog(os.path.join(out_dir, "mosaic", "patch.tif"), solid, CRS.from_epsg(3857),
              transform_3857(patch_left, patch_top), profile("deflate"))
    entries = quads[:1] + [("patch.tif", patch_left, patch_top, patch_w, "2025-06-01T00:00:00Z")] + quads[1:]

    def footprint(left, top, w):
        corners = [(left, top), (left + w, top), (left + w, top + w), (left, top + w), (left, top)]
        return {"type": "Polygon", "coordinates": [[list(reversed(point_at(x, y))) for x, y in corners]]}

    geojson = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": footprint(l, t, w), "properties": {"location": p}}
            for p, l, t, w, _ in entries
        ],
    }
    with open(os.path.join(out_dir, "mosaic", "index.geojson"), "w") as f:
        json.dump(geojson, f, indent=1)
    stac = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": p[:-4],
                "geometry": footprint(l, t, w),
                "bbox": None,
                "properties": {"datetime": dt},
                "assets": {
                    "thumbnail": {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]},
                    "image": {"href": p, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                              "roles": ["data"]},
                },
                "links": [],
            }
            for p, l, t, w, dt in entries
        ],
    }
    for item in stac["features"]:
        ring = item["geometry"]["coordinates"][0]
        lons = [c[0] for c in ring]
        lats = [c[1] for c in ring]
        item["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
    with open(os.path.join(out_dir, "mosaic", "stac.json"), "w") as f:
        json.dump(stac, f, indent=1)

    picks = samples()
    for path in files:
        full = os.path.join(out_dir, path)
        files[path]["layout"] = layout(full)
        files[path]["bytes"] = os.path.getsize(full)
        for name, s in picks.items():
            rgb_bytes, mask_bytes = reference(full, name, s)
            stem = f"{path[:-4]}.{name}"
            with open(os.path.join(out_dir, "ref", stem + ".rgb"), "wb") as f:
                f.write(rgb_bytes)
            with open(os.path.join(out_dir, "ref", stem + ".mask"), "wb") as f:
                f.write(mask_bytes)
    for p, *_ in entries:
        full = os.path.join(out_dir, "mosaic", p)
        files["mosaic/" + p] = {"crs": 3857, "layout": layout(full), "bytes": os.path.getsize(full)}

    bad_files(out_dir, region, t3857)

    with open(os.path.join(out_dir, "fixtures.json"), "w") as f:
        json.dump({"zoom": ZOOM, "left": LEFT, "top": TOP, "side": SIDE, "chip": CHIP, "samples": picks,
                   "files": files}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
