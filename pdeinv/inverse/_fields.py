"""Coefficient and initial-condition fields on node coordinates.

Built-in shapes (``constant``, ``inclusion``, ``blobs``, ``layered``, ``bumps``,
``random``)
and user expressions in ``x, y, z`` evaluated by a restricted evaluator: the
expression is parsed with :mod:`ast` and only numbers, the coordinates, named
constants, arithmetic, comparisons and a fixed list of numpy functions are
allowed (no attribute access, no subscripts, no bare ``eval``).
"""

from __future__ import annotations

import ast
import dataclasses
import operator

import numpy as np

BUILTIN_FIELDS = ("constant", "inclusion", "blobs", "layered", "bumps", "random")

_FUNCTIONS = {
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "tanh": np.tanh,
    "arctan": np.arctan,
    "arctan2": np.arctan2,
    "minimum": np.minimum,
    "maximum": np.maximum,
    "where": np.where,
    "heaviside": lambda v: np.heaviside(v, 0.5),
}
_CONSTANTS = {"pi": np.pi, "e": np.e}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def evaluate_expression(expression: str, points: np.ndarray) -> np.ndarray:
    """Evaluate ``expression`` in the coordinates ``x, y, z`` at ``points``.

    Parameters
    ----------
    expression
        e.g. ``"1 + 0.5*exp(-((x-0.5)**2 + (y-0.5)**2)/0.02)"``.  Allowed: numbers,
        ``x, y, z, r`` (distance to the origin), ``pi, e``, ``+ - * / ** %``,
        comparisons (``(x > 0.5)`` is 0 or 1) and the functions
        ``sin cos tan exp log sqrt abs tanh arctan arctan2 minimum maximum where heaviside``.
    points
        Node coordinates, shape ``(num_nodes, dim)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(num_nodes,)``.
    """
    points = np.asarray(points, dtype=float)
    names = dict(_CONSTANTS)
    for axis, name in enumerate("xyz"):
        names[name] = points[:, axis] if axis < points.shape[1] else np.zeros(len(points))
    names["r"] = np.linalg.norm(points, axis=1)
    try:
        tree = ast.parse(str(expression), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"cannot parse expression {expression!r}: {err.msg}") from None
    value = _Evaluator(names, expression).visit(tree.body)
    return np.broadcast_to(np.asarray(value, dtype=float), (len(points),)).copy()


class _Evaluator(ast.NodeVisitor):
    def __init__(self, names, expression):
        self.names = names
        self.expression = expression

    def _fail(self, what):
        allowed = sorted(set(self.names) | set(_FUNCTIONS))
        raise ValueError(
            f"expression {self.expression!r}: {what} is not allowed; "
            f"use numbers, arithmetic, comparisons and {', '.join(allowed)}"
        )

    def generic_visit(self, node):
        self._fail(f"{type(node).__name__}")

    def visit_Constant(self, node):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            self._fail(f"the constant {node.value!r}")
        return float(node.value)

    def visit_Name(self, node):
        if node.id not in self.names:
            self._fail(f"the name {node.id!r}")
        return self.names[node.id]

    def visit_BinOp(self, node):
        op = _BINARY.get(type(node.op))
        if op is None:
            self._fail(f"the operator {type(node.op).__name__}")
        return op(self.visit(node.left), self.visit(node.right))

    def visit_UnaryOp(self, node):
        op = _UNARY.get(type(node.op))
        if op is None:
            self._fail(f"the operator {type(node.op).__name__}")
        return op(self.visit(node.operand))

    def visit_Compare(self, node):
        left = self.visit(node.left)
        result = True
        for op_node, right_node in zip(node.ops, node.comparators, strict=False):
            op = _COMPARE.get(type(op_node))
            if op is None:
                self._fail(f"the comparison {type(op_node).__name__}")
            right = self.visit(right_node)
            result = np.logical_and(result, op(left, right))
            left = right
        return np.asarray(result, dtype=float)

    def visit_Call(self, node):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            self._fail(f"the function {name!r}")
        if node.keywords:
            self._fail("a keyword argument")
        return _FUNCTIONS[node.func.id](*[self.visit(arg) for arg in node.args])


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """Parameters of the built-in fields (all lengths relative to the unit box).

    Parameters
    ----------
    background
        Value away from features.
    contrast
        Ratio feature value / background (inclusion, blobs, layers alternate it).
    center, radius
        Position and radius of the inclusion (relative to the bounding box).
    smooth_amplitude
        Relative amplitude of the smooth sinusoidal variation added to ``inclusion``.
    num_features
        Number of blobs / layers / bumps.
    """

    background: float = 1.0
    contrast: float = 2.0
    center: tuple[float, ...] = (0.6, 0.4)
    radius: float = 0.15
    smooth_amplitude: float = 0.3
    num_features: int = 3


def make_field(kind: str, points: np.ndarray, spec: FieldSpec | None = None, *, seed: int = 0):
    """A positive or signed nodal field: built-in ``kind`` or an expression.

    Parameters
    ----------
    kind
        One of ``constant, inclusion, blobs, layered, bumps, random`` or an
        expression accepted by :func:`evaluate_expression`.  ``random`` is a
        smooth random field, ``background * contrast^tanh(g)`` with ``g`` a
        seeded sample of a unit-variance squared-exponential Gaussian process of
        correlation length ``radius`` (random Fourier features): positive,
        between ``background / contrast`` and ``background * contrast``.
    points
        Node coordinates ``(num_nodes, dim)``.
    spec
        Shape parameters of the built-in fields.
    seed
        Seed for the random positions of ``blobs`` and the sample of ``random``.

    Returns
    -------
    numpy.ndarray
        Shape ``(num_nodes,)``.

    Notes
    -----
    Coordinates are mapped to the unit box ``[0, 1]^dim`` of the bounding box
    before the built-in shapes are drawn, so the same config gives the same
    picture on any domain.
    """
    spec = FieldSpec() if spec is None else spec
    points = np.asarray(points, dtype=float)
    if kind not in BUILTIN_FIELDS:
        return evaluate_expression(kind, points)
    lo, hi = points.min(axis=0), points.max(axis=0)
    xi = (points - lo) / np.where(hi > lo, hi - lo, 1.0)
    dim = xi.shape[1]
    b = spec.background
    if kind == "constant":
        return np.full(len(points), float(b))
    if kind == "inclusion":
        center = _pad(spec.center, dim)
        dist = np.linalg.norm(xi - center, axis=1)
        smooth = 1.0 + spec.smooth_amplitude * np.prod(np.sin(np.pi * xi[:, :2]), axis=1) * np.cos(
            np.pi * xi[:, 0]
        )
        # Smoothed edge (width ~ radius/5) so a grid can resolve the jump.
        indicator = 0.5 * (1.0 - np.tanh((dist - spec.radius) / (0.2 * spec.radius)))
        return b * smooth * (1.0 + (spec.contrast - 1.0) * indicator)
    if kind == "blobs":
        rng = np.random.default_rng(seed)
        field = np.zeros(len(points))
        for _ in range(spec.num_features):
            c = rng.uniform(0.2, 0.8, size=dim)
            amplitude = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
            field += amplitude * np.exp(-np.sum((xi - c) ** 2, axis=1) / (2 * spec.radius**2))
        # log-space blobs keep the field positive: values between b/contrast and b*contrast.
        return b * np.exp(np.log(spec.contrast) * np.clip(field, -1.0, 1.0))
    if kind == "random":
        rng = np.random.default_rng(seed)
        num = 512
        freqs = rng.standard_normal((num, dim)) / spec.radius
        phases = rng.uniform(0.0, 2 * np.pi, num)
        weights = rng.standard_normal(num)
        sample = np.sqrt(2.0 / num) * (np.cos(xi @ freqs.T + phases) @ weights)
        return b * np.exp(np.log(spec.contrast) * np.tanh(sample))
    if kind == "layered":
        layer = np.minimum((xi[:, -1] * spec.num_features).astype(int), spec.num_features - 1)
        return np.where(layer % 2 == 0, b, b * spec.contrast)
    # bumps: a signed smooth initial condition with gradients everywhere
    field = np.zeros(len(points))
    k = spec.num_features
    for axis in range(dim):
        field = field + np.cos(k * np.pi * xi[:, axis] + 0.3 * axis)
    return field + np.prod(np.sin(np.pi * xi), axis=1)


def _pad(values, dim):
    values = np.asarray(values, dtype=float).ravel()
    out = np.full(dim, 0.5)
    out[: min(dim, len(values))] = values[:dim]
    return out
