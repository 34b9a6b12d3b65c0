#!/usr/bin/env python3
"""Fit the statistics of the stationary Gaussian prior (``--prior gaussian``) to images.

    python -m tools.fit_gaussian_prior                      # the bundled pairs -> models/gaussian_prior.npz
    python -m tools.fit_gaussian_prior --images DIR ... --out FILE --bins 48

Every image (grey ones as three equal channels) is read as RGB in [-1, 1], the value range of
the diffusion model's x0. Fitted, each image weighing the same:

* ``mean``: the per-channel pixel mean;
* ``color_cov``: the 3x3 covariance of the pixels' colours about that mean;
* ``radius``, ``power``: the radially averaged power spectrum of the luminance about its mean
  (orthonormal FFT of the Hann-windowed image, divided by the window's mean square), averaged
  over images in ``--bins`` rings of equal width in cycles per pixel (DC left out; the prior
  uses the lowest ring's value there), normalised so that it averages 1 over a 256x256 grid:
  the colour covariance then holds the pixel variance.

The file is a few kilobytes; :mod:`guided_diffusion.gaussian_prior` reads it.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from util.fileio import write_bytes_atomic
from util.images import ImageError, is_image_file, read_rgb

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDERS = (REPO / "tests" / "fixtures" / "data",)
DEFAULT_OUT = REPO / "models" / "gaussian_prior.npz"
MAX_RADIUS = np.sqrt(0.5)  # the corner frequency (1/2, 1/2) in cycles per pixel
NORMALISING_SIZE = 256


def image_files(folders) -> list[Path]:
    files = sorted(p for folder in folders for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise SystemExit(f"error: no images under {', '.join(map(str, folders))}; give --images FOLDER")
    return files


def radial_power(luma: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum of power, count) per ring of the Hann-windowed, mean-removed luminance."""
    height, width = luma.shape
    window = np.outer(np.hanning(height), np.hanning(width))
    spectrum = np.fft.fft2((luma - luma.mean()) * window, norm="ortho")
    power = np.abs(spectrum) ** 2 / np.mean(window ** 2)
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])
    ring = np.digitize(radius, edges) - 1
    inside = (radius > 0) & (ring >= 0) & (ring < len(edges) - 1)
    sums = np.bincount(ring[inside], weights=power[inside], minlength=len(edges) - 1)
    counts = np.bincount(ring[inside], minlength=len(edges) - 1)
    return sums, counts


def fit(files, bins: int) -> dict:
    edges = np.linspace(0.0, MAX_RADIUS, bins + 1)
    means, second_moments, spectra = [], [], []
    for path in files:
        rgb = read_rgb(path).astype(np.float64) / 255 * 2 - 1
        pixels = rgb.reshape(-1, 3)
        means.append(pixels.mean(axis=0))
        second_moments.append(pixels.T @ pixels / len(pixels))
        sums, counts = radial_power(rgb @ np.array([0.299, 0.587, 0.114]), edges)
        spectra.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
    mean = np.mean(means, axis=0)
    color_cov = np.mean(second_moments, axis=0) - np.outer(mean, mean)
    power = np.nanmean(np.array(spectra), axis=0)
    radius = (edges[:-1] + edges[1:]) / 2
    keep = np.isfinite(power) & (power > 0)
    radius, power = radius[keep], power[keep]
    grid = np.hypot(np.fft.fftfreq(NORMALISING_SIZE)[:, None], np.fft.fftfreq(NORMALISING_SIZE)[None, :])
    power = power / np.exp(np.interp(grid, radius, np.log(power))).mean()
    return {"mean": mean, "color_cov": color_cov, "radius": radius, "power": power}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=[str(p) for p in DEFAULT_FOLDERS],
                        help="folders searched (recursively) for images (default: the bundled test pairs)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the .npz written (default models/gaussian_prior.npz)")
    parser.add_argument("--bins", type=int, default=48, help="rings of the radial spectrum (default 48)")
    args = parser.parse_args(argv)
    files = image_files(args.images)
    try:
        stats = fit(files, args.bins)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    buffer = io.BytesIO()
    sources = [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in files]
    np.savez(buffer, **{k: v.astype(np.float64) for k, v in stats.items()},
             sources=np.array(sorted({str(Path(s).parent) for s in sources})), images=np.array(len(files)))
    write_bytes_atomic(args.out, buffer.getvalue())
    print(f"{args.out}: fitted on {len(files)} images; pixel std per channel "
          f"{np.sqrt(np.diag(stats['color_cov'])).round(3).tolist()}, {len(stats['radius'])} rings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
