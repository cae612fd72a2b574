"""Small-matrix functions of one Krylov decomposition, as used by the stepper.

A Krylov decomposition ``A V = V H + r e_k^T`` of a state ``u = beta V e1`` gives

    u(s) ~= beta V exp(s H) e1,

and the a posteriori error estimate of that approximation after a step ``s``
(the integral of the residual, as in Expokit's ``expv`` and in KIOPS)

    err(s) ~= beta ||r|| |e_k^T s phi_1(s H) e1|.

Symmetric (Lanczos) decompositions use one eigendecomposition of the
tridiagonal matrix, which is exact and robust for any ``s ||H||`` (no scaling and
squaring), and is reused for every trial step size.  Skew-symmetric ones (skew
Lanczos) likewise, through the Hermitian matrix ``i H`` (eigenvalues ``-i w`` of
``H``, all of modulus-one exponentials: nothing can overflow).  Bordered ones
(the affine Lanczos process, ``H = [[0, 0], [gamma e1, T]]`` with ``T``
symmetric tridiagonal) through the eigendecomposition of ``T`` and divided
differences of ``exp`` (:func:`exp_divided_difference`).  General (Arnoldi)
decompositions use the Padé exponential of a bordered matrix.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..krylov._common import eigh_small, one_at_a_time_on_cpu
from ..krylov._dense import expm_small

# Batched LAPACK deadlocks inside loops on CPU (see one_at_a_time_on_cpu).
_svd = one_at_a_time_on_cpu(lambda m: tuple(jnp.linalg.svd(m, full_matrices=False)))


def phi1(x):
    """``phi_1(x) = (exp(x) - 1) / x`` elementwise, with ``phi_1(0) = 1``."""
    small = jnp.abs(x) < 1e-8
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 + x / 2, jnp.expm1(safe) / safe)


def exp_divided_difference(x, y):
    """``exp[x, y, 0]``, the second divided difference of ``exp``, elementwise.

    ``exp[x, y, 0] = int_0^1 int_0^r exp(rho x + (1 - r) y) drho dr`` (the
    Hermite–Genocchi integral over the triangle): the ``(1, 3)`` entry of
    ``exp([[x, 1, 0], [0, y, 1], [0, 0, 0]])``, and ``phi_2(x) = exp[x, 0, 0]``.
    Evaluated without cancellation or overflow for real ``x, y`` of any size
    (except that the result itself overflows when ``max(x, y)`` is above
    about 700): with the arguments sorted and shifted by the largest, ``0 >= u
    >= v``, it is ``exp(max) (phi_1(u) - exp(u) phi_1(v - u)) / (-v)``, two
    positive terms whose difference loses at most a factor ``2 / |v|`` of
    relative accuracy, so below ``|v| = 0.1`` (all three arguments within
    0.1) the Taylor series ``sum_m h_m(u, v) / (m + 2)!`` is used instead
    (``h_m`` the complete homogeneous polynomial; 14 terms, the first dropped
    below ``15 * 0.1^14 / 16!``).
    """
    zero = jnp.zeros_like(x)
    top = jnp.maximum(jnp.maximum(x, y), zero)
    low = jnp.minimum(jnp.minimum(x, y), zero)
    middle = jnp.maximum(jnp.minimum(x, y), jnp.minimum(jnp.maximum(x, y), zero))
    u, v = middle - top, low - top
    near = v > -0.1
    v_far = jnp.where(near, -1.0, v)
    u_far = jnp.where(near, -0.5, u)
    # exp[u, v] = exp(u) phi_1(v - u): no overflow for u - v large.
    far = (phi1(u_far) - jnp.exp(u_far) * phi1(v_far - u_far)) / (-v_far)
    # Taylor: h_m(u, v) = u h_{m-1}(u, v) + v^m.
    u_near, v_near = jnp.where(near, u, 0.0), jnp.where(near, v, 0.0)
    h, v_power, factorial, series = jnp.ones_like(x), jnp.ones_like(x), 2.0, 0.5 * jnp.ones_like(x)
    for m in range(1, 14):
        v_power = v_power * v_near
        h = u_near * h + v_power
        factorial *= m + 2
        series = series + h / factorial
    return jnp.exp(top) * jnp.where(near, series, far)


def phi1_imaginary(y):
    """``phi_1(i y)`` for real ``y``, without cancellation at small ``|y|``.

    ``(exp(i y) - 1) / (i y) = sin(y) / y + i 2 sin^2(y / 2) / y``, both parts
    through ``sinc`` (``jnp.sinc(x) = sin(pi x) / (pi x)``).
    """
    half = jnp.sinc(y / (2 * jnp.pi))
    return jnp.sinc(y / jnp.pi) + 1j * (0.5 * y) * half * half


class KrylovPropagator:
    """``s -> (exp(s H) e1, err(s))`` for one decomposition (symmetric or not).

    Parameters
    ----------
    hessenberg
        The small ``(k, k)`` projected matrix ``H``.
    beta
        Norm of the start vector.
    residual_norm
        ``||r||`` of the decomposition (``h_{k+1,k}``); zero after a happy breakdown.
    symmetric
        Whether ``H`` is symmetric tridiagonal (Lanczos).
    skew
        Whether ``H`` is skew-symmetric tridiagonal (skew Lanczos).
    bordered
        Whether ``H = [[0, 0], [gamma e1, T]]`` with ``T`` symmetric tridiagonal
        (the affine Lanczos process, :func:`~pdeinv.krylov._lanczos.bordered_lanczos_process`).
        Then ``exp(s H) e1 = [1; gamma s phi_1(s T) e1]`` and ``s phi_1(s H) e1 =
        [s; gamma s^2 phi_2(s T) e1]``, both through the eigendecomposition of ``T``.
    size
        Dimension actually built (traced int, default ``k``): ``H`` is zero past
        it (a decomposition stopped early, zero-padded), and the error estimate
        uses row ``size - 1``.
    """

    def __init__(
        self,
        hessenberg,
        beta,
        residual_norm,
        *,
        symmetric: bool,
        skew: bool = False,
        bordered: bool = False,
        size=None,
    ):
        self.hessenberg = hessenberg
        self.beta = beta
        self.residual_norm = residual_norm
        self.symmetric = symmetric
        self.skew = skew
        self.bordered = bordered
        self.k = hessenberg.shape[0]
        self.last = self.k - 1 if size is None else size - 1
        if bordered:
            self.gamma = hessenberg[1, 0]
            self.evals, self.evecs = eigh_small(hessenberg[1:, 1:])
        if symmetric:
            self.evals, self.evecs = eigh_small(hessenberg)
        if skew:
            # A skew tridiagonal H (H[j+1, j] = b_j = -H[j, j+1], zero diagonal) is
            # D (-i T) D^H with D = diag(i^j) and T the real symmetric tridiagonal
            # matrix of the b_j, so H = U diag(-i w) U^H with (w, V) = eigh(T)
            # and U = D V: a real eigendecomposition (jax's complex eigh was
            # measured 600x slower than the real one at k = 30 on CPU).
            lower = jnp.tril(hessenberg, -1)
            self.freqs, real_vecs = eigh_small(lower + lower.T)
            # i^j at the matrix's precision: a Python complex would make it
            # complex128 under x64 and promote a float32 solve to float64.
            complex_dtype = jnp.result_type(hessenberg.dtype, jnp.complex64)
            phases = jnp.asarray([1, 1j, -1, -1j], complex_dtype)[jnp.arange(self.k) % 4]
            self.evecs = phases[:, None] * real_vecs
            self.first = real_vecs[0, :].astype(self.evecs.dtype)  # U^H e1 (D e1 = e1)

    def _skew_exp_times(self, s):
        return jnp.real(self.evecs @ (jnp.exp(-1j * s * self.freqs) * self.first))

    def _bordered_exp_times(self, s):
        z = self.evecs[0, :]
        inner = self.gamma * (self.evecs @ (s * phi1(s * self.evals) * z))
        return jnp.concatenate([jnp.ones((1,), inner.dtype), inner])

    def coefficients(self, s):
        """Return ``(exp(s H) e1, err(s))`` with ``err`` the absolute error estimate."""
        k = self.k
        if self.skew:
            expo = self._skew_exp_times(s)
            weights = s * phi1_imaginary(-s * self.freqs) * self.first
            last = jnp.real(self.evecs[self.last, :] @ weights)
        elif self.bordered:
            expo = self._bordered_exp_times(s)
            z = self.evecs[0, :]
            x = s * self.evals
            row = self.evecs[jnp.maximum(self.last - 1, 0), :]
            inner = self.gamma * (row @ (s * s * exp_divided_difference(x, jnp.zeros_like(x)) * z))
            last = jnp.where(self.last >= 1, inner, s)
        elif self.symmetric:
            q1 = self.evecs[0, :]
            expo = self.evecs @ (jnp.exp(s * self.evals) * q1)
            last = self.evecs[self.last, :] @ (s * phi1(s * self.evals) * q1)
        else:
            dtype = self.hessenberg.dtype
            bordered = jnp.zeros((k + 1, k + 1), dtype)
            bordered = bordered.at[:k, :k].set(s * self.hessenberg)
            bordered = bordered.at[0, k].set(s)
            e = expm_small(bordered)
            expo = e[:k, 0]
            last = e[self.last, k]
        err = self.beta * self.residual_norm * jnp.abs(last)
        return expo, err

    def exp_times(self, s):
        """``exp(s H) e1`` alone."""
        if self.skew:
            return self._skew_exp_times(s)
        if self.bordered:
            return self._bordered_exp_times(s)
        if self.symmetric:
            q1 = self.evecs[0, :]
            return self.evecs @ (jnp.exp(s * self.evals) * q1)
        return expm_small(s * self.hessenberg)[:, 0]


def two_sided_block(forward: KrylovPropagator, backward: KrylovPropagator, c_start, sigma):
    """Quadrature matrix and backward coefficients of one two-sided sub-step.

    With ``u(r) = V_f exp(r H_f) c_start`` and
    ``lam(r) = beta_b V_b exp((sigma - r) H_b) e1`` on ``r in [0, sigma]``,

        M = beta_b int_0^sigma exp(r H_f) c_start e1^T exp((sigma - r) H_b^T) dr,

    so that ``int lam^T (dA) u dr = sum_pq M_pq (V_b e_q)^T dA (V_f e_p)``; also
    returns ``exp(sigma H_b) e1`` (to form ``lam(0)``).

    For two symmetric matrices both integrals are diagonal in the eigenbases
    (divided differences of exp, evaluated stably); likewise for a bordered
    forward matrix ``H_f = [[0, 0], [gamma e1, T]]`` and a symmetric backward
    one, where ``exp(r H_f) c = [c_0; c_0 gamma r phi_1(r T) e1 + exp(r T) c']``
    adds second divided differences (:func:`exp_divided_difference`).
    Otherwise one ``2k x 2k`` Van Loan block exponential gives both.
    """
    kf, kb = forward.k, backward.k
    if forward.skew and backward.skew:
        # Eigenvalues -i w_f and -i w_b: the integral of
        # exp(r lf + (sigma - r) lb) is sigma exp(sigma lb) phi_1(sigma (lf - lb)).
        lb = -1j * sigma * backward.freqs[None, :]
        divided = (
            sigma
            * jnp.exp(lb)
            * phi1_imaginary(-sigma * (forward.freqs[:, None] - backward.freqs[None, :]))
        )
        cf = jnp.conj(forward.evecs).T @ c_start
        m = forward.evecs @ ((cf[:, None] * backward.first[None, :]) * divided) @ backward.evecs.T
        return backward.beta * jnp.real(m), backward.exp_times(sigma)
    if forward.symmetric and backward.symmetric:
        a = sigma * forward.evals[:, None]
        b = sigma * backward.evals[None, :]
        top = jnp.maximum(a, b)
        # int_0^sigma exp(r lf + (sigma - r) lb) dr = sigma exp(max) phi_1(-|a - b|)
        divided = sigma * jnp.exp(top) * phi1(-jnp.abs(a - b))
        cf = forward.evecs.T @ c_start
        qb1 = backward.evecs[0, :]
        m = forward.evecs @ ((cf[:, None] * qb1[None, :]) * divided) @ backward.evecs.T
        lam_coef = backward.evecs @ (jnp.exp(sigma * backward.evals) * qb1)
        return backward.beta * m, lam_coef
    if forward.bordered and backward.symmetric:
        # Row 0: c_0 int (exp((sigma - r) H_b) e1)^T dr.  Rows 1..: in T's and
        # H_b's eigenbases, int exp(r a_i + (sigma - r) b_j) dr (as above) for
        # exp(r T) c', and int r phi_1(r a_i) exp((sigma - r) b_j) dr =
        # sigma^2 exp[sigma a_i, sigma b_j, 0] for the border's column.
        a = sigma * forward.evals[:, None]
        b = sigma * backward.evals[None, :]
        first = sigma * jnp.exp(jnp.maximum(a, b)) * phi1(-jnp.abs(a - b))
        a, b = jnp.broadcast_arrays(a, b)
        second = sigma * sigma * exp_divided_difference(a, b)
        c0 = c_start[0]
        z = forward.evecs[0, :]
        w = forward.evecs.T @ c_start[1:]
        qb1 = backward.evecs[0, :]
        weights = (c0 * forward.gamma * z)[:, None] * second + w[:, None] * first
        inner = forward.evecs @ (weights * qb1[None, :]) @ backward.evecs.T
        border = c0 * (backward.evecs @ (sigma * phi1(sigma * backward.evals) * qb1))
        m = jnp.concatenate([border[None, :], inner], axis=0)
        lam_coef = backward.evecs @ (jnp.exp(sigma * backward.evals) * qb1)
        return backward.beta * m, lam_coef
    dtype = forward.hessenberg.dtype
    block = jnp.zeros((kf + kb, kf + kb), dtype)
    block = block.at[:kf, :kf].set(sigma * forward.hessenberg)
    block = block.at[:kf, kf].set(sigma * c_start)
    block = block.at[kf:, kf:].set(sigma * backward.hessenberg.T)
    e = expm_small(block)
    return backward.beta * e[:kf, kf:], e[kf, kf:]


# Sample times of a step's trajectory, as fractions of the step: geometric
# towards 0 (where the stiff components decay, 2^-12 .. 2^-1) and uniform.
_GEOMETRIC_LEVELS = 12
_UNIFORM_LEVEL = 3  # uniform spacing 2^-3


def _sample_times(tau, dtype):
    geometric = 2.0 ** -jnp.arange(_GEOMETRIC_LEVELS, -1, -1, dtype=dtype)
    uniform = jnp.arange(3, 2**_UNIFORM_LEVEL, 2, dtype=dtype) / 2**_UNIFORM_LEVEL
    return tau * jnp.concatenate([geometric, uniform])


def trajectory_samples(prop: KrylovPropagator, tau):
    """Samples of a step's trajectory and of its integral, as columns of a ``(k, m)`` matrix.

    For ``s`` at sample times in ``[0, tau]``, the columns are ``exp(s H) e1``
    and ``int_0^s exp(r H) e1 dr = s phi_1(s H) e1``, each scaled to unit norm.
    The times are ``tau 2^-l`` for ``l = 12 .. 0`` and ``tau i / 8``: dense near
    ``s = 0``, where the components of a stiff operator decay, and uniform over
    the step.  Symmetric and bordered decompositions evaluate them in the
    eigenbasis (of ``T`` for a bordered ``H``, see :class:`KrylovPropagator`); general
    ones by repeated squaring of one bordered exponential (the bordered matrix
    at ``2 s`` is twice that at ``s``) and by powers of the one at ``tau / 8``.
    """
    k = prop.k
    dtype = prop.hessenberg.dtype
    levels = _GEOMETRIC_LEVELS
    if prop.symmetric:
        s = _sample_times(tau, dtype)
        x = s[None, :] * prop.evals[:, None]
        q1 = prop.evecs[0, :, None]
        states = prop.evecs @ (jnp.exp(x) * q1)
        integrals = prop.evecs @ (s[None, :] * phi1(x) * q1)
    elif prop.bordered:
        s = _sample_times(tau, dtype)
        x = s[None, :] * prop.evals[:, None]
        z = prop.evecs[0, :, None]
        inner_states = prop.gamma * (prop.evecs @ (s[None, :] * phi1(x) * z))
        inner_integrals = prop.gamma * (
            prop.evecs @ (s[None, :] ** 2 * exp_divided_difference(x, jnp.zeros_like(x)) * z)
        )
        states = jnp.concatenate([jnp.ones_like(s)[None, :], inner_states], axis=0)
        integrals = jnp.concatenate([s[None, :], inner_integrals], axis=0)
    else:
        bordered = jnp.zeros((k + 1, k + 1), dtype)
        bordered = bordered.at[:k, :k].set(prop.hessenberg)
        bordered = bordered.at[0, k].set(1.0)
        power = expm_small((tau * 2.0**-levels) * bordered)
        exps = []
        for level in range(levels, -1, -1):
            exps.append(power)
            if level:
                power = power @ power
        eighth = exps[levels - _UNIFORM_LEVEL]
        quarter = exps[levels - _UNIFORM_LEVEL + 1]
        x = quarter
        for _ in range(3, 2**_UNIFORM_LEVEL, 2):
            x = eighth @ x
            exps.append(x)
            x = eighth @ x
        states = jnp.stack([e[:k, 0] for e in exps], axis=1)
        integrals = jnp.stack([e[:k, k] for e in exps], axis=1)
    samples = jnp.concatenate([states, integrals], axis=1)
    norms = jnp.linalg.norm(samples, axis=0)
    return samples / jnp.where(norms > 0, norms, 1.0)


def trajectory_basis(prop: KrylovPropagator, tau, rank: int):
    """Orthonormal ``(k, rank)`` coefficients spanning a step's trajectory, and their miss.

    The leading left singular vectors of :func:`trajectory_samples`, and the
    first dropped singular value relative to the largest (how far the samples
    are from rank ``rank``).  Whether the vectors are enough for a backward
    sub-step is checked there (the quadrature matrix must lie in their span);
    the miss only predicts it.
    """
    # A basis of a subspace, chosen without derivative (the SVD's is undefined
    # at repeated singular values); the states expressed in it carry theirs.
    left, svals, _ = _svd(lax.stop_gradient(trajectory_samples(prop, tau)))
    return left[:, :rank], svals[rank] / svals[0]
