r"""Laplace posterior: Gaussian approximation of the posterior at the MAP point.

With the data misfit :math:`\Phi(m) = \tfrac12\|(f(m) - d)/\sigma\|^2` and a Gaussian
prior :math:`N(m_0, \Gamma_{pr})` whose precision is the regulariser's Hessian,
:math:`\Gamma_{pr}^{-1} = w\nabla^2 R`, the Laplace approximation at :math:`m^*` is
:math:`N(m^*, \Gamma_{post})` with the Gauss–Newton precision

.. math::
    \Gamma_{post}^{-1} = J^T\Gamma_{noise}^{-1}J + \Gamma_{pr}^{-1} = H_{mis} + \Gamma_{pr}^{-1}.

Everything below comes from the generalised eigenproblem
:math:`H_{mis} v = \lambda\,\Gamma_{pr}^{-1} v`, solved in its prior-preconditioned form
:math:`L^T H_{mis} L\,u = \lambda u` with :math:`\Gamma_{pr} = L L^T` using
Hessian–vector products only (randomized double pass, or Lanczos with full
reorthogonalisation; exact when the number of vectors reaches the number of
unknowns).  With the ``r`` largest pairs :math:`(\lambda_i, u_i)`,

- covariance :math:`\Gamma_{post} = L(I - U D U^T)L^T`,
  :math:`D = \mathrm{diag}(\lambda/(1+\lambda))`;
- samples :math:`m^* + L(\xi - U(1 - (1+\Lambda)^{-1/2})U^T\xi)`;
- log evidence (Laplace marginal likelihood, exact for a linear model)
  :math:`-\Phi(m^*) - \tfrac12\|m^* - m_0\|^2_{\Gamma_{pr}^{-1}}
  - \tfrac12\sum_i\log(1+\lambda_i) - \tfrac{N}{2}\log 2\pi - \sum_d\log\sigma_d`;
- effective number of parameters :math:`\sum_i \lambda_i/(1+\lambda_i)`.

The truncated eigenvalues are the smallest; each contributes at most
:math:`\lambda/(1+\lambda)` to every one of these quantities.  The prior is dense
(its matrices are cheap next to the PDE solves); :math:`J` is never formed.
"""

# Implementation by concern: _prior (the Gaussian prior), _hessian (the misfit
# Hessian's products), _eigen (eigensolvers), _posterior (the posterior and its
# quantities), _evidence (the weight by the evidence).  Re-exports only.
from ._eigen import METHODS as METHODS
from ._eigen import LowRankEigen as LowRankEigen
from ._eigen import dense_eigh as dense_eigh
from ._eigen import generalized_eigh as generalized_eigh
from ._eigen import jacobian_eigh as jacobian_eigh
from ._eigen import lanczos_eigh as lanczos_eigh
from ._eigen import nystrom_eigh as nystrom_eigh
from ._eigen import randomized_eigh as randomized_eigh
from ._evidence import EvidenceResult as EvidenceResult
from ._evidence import fit_evidence as fit_evidence
from ._hessian import _FD_PROGRAMS as _FD_PROGRAMS
from ._hessian import _GN_PROGRAMS as _GN_PROGRAMS
from ._hessian import _JACOBIAN_PROGRAMS as _JACOBIAN_PROGRAMS
from ._hessian import HESSIANS as HESSIANS
from ._hessian import MisfitHessian as MisfitHessian
from ._hessian import misfit_hessian as misfit_hessian
from ._hessian import residual_jacobian as residual_jacobian
from ._posterior import LaplacePosterior as LaplacePosterior
from ._posterior import choose_method as choose_method
from ._posterior import coverage as coverage
from ._posterior import default_rank as default_rank
from ._posterior import laplace_posterior as laplace_posterior
from ._prior import MAX_DENSE_UNKNOWNS as MAX_DENSE_UNKNOWNS
from ._prior import GaussianPrior as GaussianPrior
from ._prior import gaussian_prior as gaussian_prior
