"""Figures of a run folder: kappa.png, convergence.png, fit.png (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._run import atomic_path, read_result

KAPPA_FIGURE = "kappa.png"
CONVERGENCE_FIGURE = "convergence.png"
FIT_FIGURE = "fit.png"

_SYMBOL = {"kappa": "κ", "c": "c"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


class _Geometry:
    """Enough of the grid/mesh to draw nodal fields."""

    def __init__(self, result):
        self.points = np.asarray(result["points"], dtype=float)
        self.cells = np.asarray(result["cells"])
        self.cell_type = str(result["cell_type"])
        shape = result.get("grid_shape")
        self.shape = None if shape is None or np.size(shape) == 0 else tuple(int(s) for s in shape)
        self.dim = self.points.shape[1]

    def triangles(self):
        if self.cell_type == "triangle":
            return self.cells
        if self.cell_type == "quad":
            return self.cells[:, [[0, 1, 2], [0, 2, 3]]].reshape(-1, 3)
        return None

    def outline_segments(self):
        """Boundary edges of a 2-D mesh (edges that belong to one cell only)."""
        cells = self.cells
        n = cells.shape[1]
        edges = np.concatenate([cells[:, [i, (i + 1) % n]] for i in range(n)])
        edges = np.sort(edges, axis=1)
        unique, counts = np.unique(edges, axis=0, return_counts=True)
        return self.points[unique[counts == 1]]

    def draw(self, ax, values, *, cmap, vmin, vmax, title):
        plt = _pyplot()
        values = np.asarray(values, dtype=float)
        if self.dim == 1:
            order = np.argsort(self.points[:, 0])
            ax.plot(self.points[order, 0], values[order], color="C0")
            ax.set_xlabel("x")
            ax.set_ylim(vmin, vmax)
            ax.set_title(title)
            return None
        if self.dim == 3:
            # Middle z-slice of a 3-D field (nearest layer of nodes).
            z = self.points[:, 2]
            mid = np.unique(z)[len(np.unique(z)) // 2]
            keep = np.isclose(z, mid)
            artist = ax.scatter(
                self.points[keep, 0], self.points[keep, 1], c=values[keep], cmap=cmap,
                vmin=vmin, vmax=vmax, s=12, marker="s",
            )  # fmt: skip
            ax.set_title(f"{title} (z = {mid:.2g})")
        elif self.shape is not None:
            nx, ny = self.shape
            x = self.points[:, 0].reshape(nx, ny)[:, 0]
            y = self.points[:, 1].reshape(nx, ny)[0, :]
            hx, hy = (x[1] - x[0]) / 2, (y[1] - y[0]) / 2
            extent = (x[0] - hx, x[-1] + hx, y[0] - hy, y[-1] + hy)
            artist = ax.imshow(
                values.reshape(nx, ny).T, origin="lower", extent=extent, cmap=cmap,
                vmin=vmin, vmax=vmax, interpolation="nearest",
            )  # fmt: skip
            ax.add_patch(
                plt.Rectangle(
                    (extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2],
                    fill=False, edgecolor="black", linewidth=1.0,
                )
            )  # fmt: skip
            ax.set_title(title)
        else:
            triangles = self.triangles()
            artist = ax.tripcolor(
                self.points[:, 0], self.points[:, 1], triangles, values, cmap=cmap,
                vmin=vmin, vmax=vmax, shading="gouraud",
            )  # fmt: skip
            from matplotlib.collections import LineCollection

            ax.add_collection(
                LineCollection(self.outline_segments(), colors="black", linewidths=1.0)
            )
            ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        return artist


def _colorbar(fig, ax, artist, label):
    if artist is not None:
        fig.colorbar(artist, ax=ax, shrink=0.85, label=label)


def draw_coefficient(result, path):
    """True / recovered / error of the coefficient side by side."""
    plt = _pyplot()
    geom = _Geometry(result)
    name = str(result.get("coefficient", "kappa"))
    symbol = _SYMBOL.get(name, name)
    recovered = result.get("recovered_field")
    true = result.get("true_field")
    shown = [np.asarray(f, dtype=float) for f in (true, recovered) if f is not None]
    lo = min(f.min() for f in shown)
    hi = max(f.max() for f in shown)
    panels = 3 if len(shown) == 2 else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 4.3), squeeze=False)
    axes = axes[0]
    sensors = result.get("sensor_locations")
    if true is not None and recovered is not None:
        true, recovered = shown
        art = geom.draw(axes[0], true, cmap="viridis", vmin=lo, vmax=hi, title=f"true {symbol}")
        _colorbar(fig, axes[0], art, symbol)
        rel = np.linalg.norm(recovered - true) / np.linalg.norm(true)
        art = geom.draw(
            axes[1], recovered, cmap="viridis", vmin=lo, vmax=hi, title=f"recovered {symbol}"
        )
        _colorbar(fig, axes[1], art, symbol)
        error = recovered - true
        bound = float(np.max(np.abs(error))) or 1.0
        art = geom.draw(
            axes[2], error, cmap="RdBu_r", vmin=-bound, vmax=bound,
            title=f"error (recovered − true), rel. L2 = {rel:.3f}",
        )  # fmt: skip
        _colorbar(fig, axes[2], art, f"Δ{symbol}")
        sensor_axes = axes[1:2]
    else:
        label = "true" if true is not None else "recovered"
        art = geom.draw(
            axes[0], shown[0], cmap="viridis", vmin=lo, vmax=hi, title=f"{label} {symbol}"
        )
        _colorbar(fig, axes[0], art, symbol)
        sensor_axes = axes[:1]
    if sensors is not None and np.size(sensors) and geom.dim == 2:
        for ax in sensor_axes:
            ax.plot(sensors[:, 0], sensors[:, 1], "w+", ms=6, mew=1.2, label="sensors")
            ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    fig.suptitle(f"Coefficient {symbol}: {result.get('title', '')}".rstrip(": "))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def draw_convergence(result, path):
    """Objective, data misfit and gradient norm per iteration (log scale)."""
    plt = _pyplot()
    objective = np.asarray(result["history_objective"], dtype=float)
    misfit = np.asarray(result["history_misfit"], dtype=float)
    grad = np.asarray(result["history_grad_norm"], dtype=float)
    it = np.arange(len(objective))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].semilogy(it, objective, "o-", ms=3, label="objective J")
    axes[0].semilogy(it, misfit, "s-", ms=3, label="data misfit ½‖(pred − data)/σ‖²")
    target = result.get("misfit_target")
    if target is not None:
        axes[0].axhline(float(target), color="gray", ls="--", label="noise level (#data / 2)")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("value")
    axes[0].set_title("Objective")
    axes[0].legend(fontsize=8)
    axes[0].grid(True, which="both", alpha=0.3)
    axes[1].semilogy(it, grad, "o-", ms=3, color="C3")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("‖∇J‖₂")
    axes[1].set_title("Gradient norm")
    axes[1].grid(True, which="both", alpha=0.3)
    stages = result.get("stage_starts")
    if stages is not None and np.size(stages) > 1:
        for ax in axes:
            for s in np.asarray(stages)[1:]:
                ax.axvline(s, color="k", alpha=0.2, lw=0.8)
    fig.suptitle("Optimiser convergence")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def draw_fit(result, path):
    """Observed vs predicted: time slices (full field) or per-sensor time series."""
    plt = _pyplot()
    times = np.asarray(result["times"], dtype=float)
    observed = np.asarray(result["observations"], dtype=float)
    predicted = np.asarray(result["predictions"], dtype=float)
    label = str(result.get("prediction_label", "predicted"))
    full = str(result.get("observation_kind", "full")) == "full" and "points" in result
    if full and np.asarray(result["points"]).shape[1] >= 2:
        geom = _Geometry(result)
        sigma = result.get("noise_sigma")
        noise = f", σ = {float(sigma):.2g}" if sigma is not None else ""
        show = np.unique(np.linspace(0, len(times) - 1, min(3, len(times))).round().astype(int))
        fig, axes = plt.subplots(len(show), 3, figsize=(14, 3.8 * len(show)), squeeze=False)
        for row, i in enumerate(show):
            lo = min(observed[i].min(), predicted[i].min())
            hi = max(observed[i].max(), predicted[i].max())
            art = geom.draw(axes[row, 0], observed[i], cmap="magma", vmin=lo, vmax=hi,
                            title=f"observed u, t = {times[i]:.3g}")  # fmt: skip
            _colorbar(fig, axes[row, 0], art, "u")
            art = geom.draw(axes[row, 1], predicted[i], cmap="magma", vmin=lo, vmax=hi,
                            title=f"{label} u, t = {times[i]:.3g}")  # fmt: skip
            _colorbar(fig, axes[row, 1], art, "u")
            residual = observed[i] - predicted[i]
            bound = float(np.max(np.abs(residual))) or 1.0
            art = geom.draw(axes[row, 2], residual, cmap="RdBu_r", vmin=-bound, vmax=bound,
                            title=f"residual (observed − {label}){noise}")  # fmt: skip
            _colorbar(fig, axes[row, 2], art, "Δu")
        fig.suptitle("Data fit at the observation times", fontsize=13)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        _save(fig, path)
        plt.close(fig)
        return
    if str(result.get("observation_kind", "")) == "sensors":
        _draw_sensor_series(result, path, times, observed, predicted, label)
        return
    else:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        cmap = plt.get_cmap("viridis")
        for i, t in enumerate(times):
            color = cmap(i / max(len(times) - 1, 1))
            axes[0].plot(observed[i], predicted[i], "o", ms=4, color=color, label=f"t = {t:.3g}")
        lo = min(observed.min(), predicted.min())
        hi = max(observed.max(), predicted.max())
        axes[0].plot([lo, hi], [lo, hi], "k--", lw=1, label="perfect fit")
        axes[0].set_xlabel("observed")
        axes[0].set_ylabel(label)
        axes[0].set_title(f"Sensors: observed vs {label}")
        axes[0].legend(fontsize=8)
        axes[0].set_aspect("equal")
        sigma = result.get("noise_sigma")
        residual = (observed - predicted).ravel()
        if sigma is not None and float(sigma) > 0:
            residual = residual / float(sigma)
            axes[1].set_xlabel("residual / σ (noise standard deviation)")
            grid = np.linspace(-4, 4, 200)
            axes[1].plot(grid, np.exp(-(grid**2) / 2) / np.sqrt(2 * np.pi), "k--",
                         label="N(0, 1): fit at the noise level")  # fmt: skip
            axes[1].legend(fontsize=8)
        else:
            axes[1].set_xlabel("residual")
        axes[1].hist(residual, bins=30, density=True, color="C0", alpha=0.7)
        axes[1].set_ylabel("density")
        axes[1].set_title("Residuals")
        fig.suptitle("Data fit")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


#: Sensors drawn as curves in fit.png (evenly picked when there are more).
MAX_SENSOR_CURVES = 8


def _draw_sensor_series(result, path, times, observed, predicted, label):
    """Per-sensor curves over time (e.g. drawdown curves) and residuals in units of sigma."""
    plt = _pyplot()
    num_sensors = observed.shape[1]
    show = np.unique(
        np.linspace(0, num_sensors - 1, min(num_sensors, MAX_SENSOR_CURVES)).round().astype(int)
    )
    locations = result.get("sensor_locations")
    sigma = result.get("data_sigma", result.get("noise_sigma"))
    sigma = None if sigma is None else np.broadcast_to(np.asarray(sigma, float), observed.shape)
    log_time = times[0] > 0 and times[-1] / times[0] >= 20
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.8))
    for k, j in enumerate(show):
        color = f"C{k % 10}"
        name = f"sensor {j}"
        if locations is not None and np.ndim(locations) == 2 and j < len(locations):
            name += " (" + ", ".join(f"{c:.3g}" for c in np.asarray(locations)[j]) + ")"
        axes[0].plot(times, observed[:, j], "o", ms=4, color=color, label=name)
        axes[0].plot(times, predicted[:, j], "-", lw=1.3, color=color)
        if sigma is not None and np.all(sigma[:, j] > 0):
            residual = (observed[:, j] - predicted[:, j]) / sigma[:, j]
        else:
            residual = observed[:, j] - predicted[:, j]
        axes[1].plot(times, residual, "o-", ms=4, lw=0.8, color=color)
    axes[0].plot([], [], "ko", ms=4, label="observed")
    axes[0].plot([], [], "k-", lw=1.3, label=label)
    axes[0].set_xlabel("time")
    axes[0].set_ylabel("u at the sensor")
    shown = "" if len(show) == num_sensors else f" ({len(show)} of {num_sensors})"
    axes[0].set_title(f"Sensor time series: observed vs {label}{shown}")
    axes[0].legend(fontsize=7, ncol=2)
    scaled = sigma is not None and np.all(sigma > 0)
    if scaled:
        for level, style in ((1, "--"), (2, ":")):
            for sign in (-1, 1):
                axes[1].axhline(sign * level, color="gray", ls=style, lw=0.8)
        axes[1].set_ylabel("residual / σ (observed − predicted)")
        axes[1].set_title("Residuals in units of the noise σ (±1σ dashed, ±2σ dotted)")
    else:
        axes[1].set_ylabel("residual (observed − predicted)")
        axes[1].set_title("Residuals")
    axes[1].axhline(0.0, color="k", lw=0.8)
    axes[1].set_xlabel("time")
    for ax in axes:
        if log_time:
            ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Data fit at the sensors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_figures(folder) -> list[Path]:
    """(Re)draw kappa.png, convergence.png and fit.png of a run folder (and, with the
    Laplace posterior in result.npz, uncertainty.png and spectrum.png)."""
    folder = Path(folder)
    if not (folder / "result.npz").is_file():
        raise FileNotFoundError(f"{folder} is not a run folder: result.npz not found")
    result = read_result(folder)
    paths = []
    for name, draw in (
        (KAPPA_FIGURE, draw_coefficient),
        (CONVERGENCE_FIGURE, draw_convergence),
        (FIT_FIGURE, draw_fit),
    ):
        if name == CONVERGENCE_FIGURE and "history_objective" not in result:
            continue  # a `simulate` run has no optimiser history
        if name == KAPPA_FIGURE and not {"recovered_field", "true_field"} & set(result):
            continue
        if name == FIT_FIGURE and "predictions" not in result:
            continue
        draw(result, folder / name)
        paths.append(folder / name)
    if "posterior_std_field" in result:
        from ._uncertainty import (
            SPECTRUM_FIGURE,
            UNCERTAINTY_FIGURE,
            draw_spectrum,
            draw_uncertainty,
        )

        for name, draw in (
            (UNCERTAINTY_FIGURE, draw_uncertainty),
            (SPECTRUM_FIGURE, draw_spectrum),
        ):
            draw(result, folder / name)
            paths.append(folder / name)
    return paths


def _save(fig, path) -> None:
    """PNG under a temporary name, then renamed (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=110, format="png")
