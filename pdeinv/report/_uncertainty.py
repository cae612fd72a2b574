"""Figures of the Laplace posterior: uncertainty.png and spectrum.png (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np

UNCERTAINTY_FIGURE = "uncertainty.png"
SPECTRUM_FIGURE = "spectrum.png"


def draw_uncertainty(result, path):
    """MAP field, pointwise posterior std, posterior samples and the truth (with sensors)."""
    from ._figures import _SYMBOL, _colorbar, _Geometry, _pyplot, _save

    plt = _pyplot()
    geom = _Geometry(result)
    name = str(result.get("coefficient", "kappa"))
    symbol = _SYMBOL.get(name, name)
    log_field = bool(result.get("log_field", True))
    mean = np.asarray(result["posterior_mean_field"], dtype=float)
    mean = np.exp(mean) if log_field else mean
    std = np.asarray(result["posterior_std_field"], dtype=float)
    samples = np.asarray(result.get("posterior_samples", np.zeros((0, mean.size))), dtype=float)
    true = result.get("true_field")
    shown = [mean, *samples[:3]] + ([np.asarray(true, dtype=float)] if true is not None else [])
    lo, hi = min(f.min() for f in shown), max(f.max() for f in shown)
    top = [("MAP " + symbol, mean)]
    if true is not None:
        top.insert(0, (f"true {symbol}", np.asarray(true, dtype=float)))
    bottom = [(f"posterior sample {i + 1}", s) for i, s in enumerate(samples[:3])]
    columns = max(len(top) + 1, len(bottom), 1)
    rows = 2 if bottom else 1
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    sensors = result.get("sensor_locations")
    for j, (title, values) in enumerate(top):
        axes[0, j].set_visible(True)
        art = geom.draw(axes[0, j], values, cmap="viridis", vmin=lo, vmax=hi, title=title)
        _colorbar(fig, axes[0, j], art, symbol)
        if title.startswith("true") and sensors is not None and np.size(sensors) and geom.dim == 2:
            axes[0, j].plot(sensors[:, 0], sensors[:, 1], "w+", ms=6, mew=1.2, label="sensors")
            axes[0, j].legend(loc="upper right", fontsize=7, framealpha=0.6)
    ax = axes[0, len(top)]
    ax.set_visible(True)
    std_label = f"std of log {symbol}" if log_field else f"std of {symbol}"
    art = geom.draw(ax, std, cmap="magma", vmin=0.0, vmax=float(std.max()) or 1.0,
                    title=f"posterior {std_label}")  # fmt: skip
    _colorbar(fig, ax, art, std_label)
    for j, (title, values) in enumerate(bottom):
        axes[1, j].set_visible(True)
        art = geom.draw(axes[1, j], values, cmap="viridis", vmin=lo, vmax=hi, title=title)
        _colorbar(fig, axes[1, j], art, symbol)
    fig.suptitle(f"Laplace posterior: {result.get('title', '')}".rstrip(": "))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def draw_spectrum(result, path):
    """Eigenvalues of the prior-preconditioned misfit Hessian against the line 1."""
    from ._figures import _pyplot, _save

    plt = _pyplot()
    values = np.asarray(result["hessian_eigenvalues"], dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    index = np.arange(1, values.size + 1)
    positive = values > 0
    ax.semilogy(index[positive], values[positive], "o-", ms=3, label="λ_i")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1.0, label="λ = 1")
    above = int(np.sum(values > 1.0))
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue")
    ax.set_title(
        f"generalised eigenvalues of (data-misfit Hessian, prior precision): {above} above 1"
    )
    ax.title.set_fontsize(9)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
