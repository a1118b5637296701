"""What a rank plan will do to the model's outputs and loss, predicted from calibration, with no SVD.

Two quantities, each read from per-matrix cumulative sums computed once per (model,
calibration), so a slider move costs a lookup per matrix:

- **Activation-aware error.** The whitened singular values σ̃ᵢ of W·S (S Sᵀ = XᵀX of the
  layer's inputs on the calibration tokens) price truncation in output error: dropping σ̃ᵢ
  costs exactly σ̃ᵢ² of ‖(W − W_r) X‖²_F, and Σσ̃ᵢ² = ‖W X‖²_F. The error shown is
  sqrt(Σ dropped σ̃ᵢ² / Σ σ̃ᵢ²), the relative output error, in the same units as the plain
  ‖W − W_r‖_F/‖W‖_F beside it (its square is the fraction of output energy dropped). Per
  matrix, per kind and for the model (all linear matrices stacked).
- **Predicted loss.** The loss-gradient–weighted cost cᵢ = σ̃ᵢ² · mean_t (uᵢᵀ g_t)² of each
  whitened component (:func:`lowrank_lab.compress.auto.component_costs`, g_t the gradient of the
  mean calibration loss at the layer's output). With the empirical Fisher (see
  :mod:`lowrank_lab.compress.costs`) dropping component i raises the mean loss by about
  cᵢ · N²/(2M) nats per token, N the predicted tokens and M the tokens of the calibration
  blocks; summed over every dropped component of every matrix, that is the *raw* predicted
  loss increase D (second order, interactions between layers ignored).

D is biased for plans chosen by minimising it: ``auto`` picks the components whose estimated
cost is low, including those whose estimate errs low, so its plans are predicted better than
they turn out (measured: an ``auto`` plan's D is 0.13–0.46 of the uniform plan's of the same
size, its measured loss increase 0.21–0.88 of it). The prediction therefore *anchors* D on D_u,
the raw estimate of the uniform plan of the same size (chosen without looking at the costs):
D* = D^½ · max(D, D_u)^½ (:meth:`PredictionBasis.anchored`), trusting half the predicted
advantage over uniform, in log; a plan predicted worse than uniform keeps its D.

D*'s scale is only approximate: errors compound through the layers, so larger cuts cost more
than the sum. Measured runs fix the scale: ΔL = a · D*^b is fitted by least squares in log–log
space over compressions of the same model (their D* recorded before they ran, their
ΔL = log(perplexity / dense perplexity) measured after), and the residual spread is the
uncertainty. Without enough runs the prior a = 1, b = 1 holds, with a wide band
(:data:`~lowrank_lab.prediction.fit.PRIOR_LOG_SD`).
"""

from lowrank_lab.prediction.basis import Prediction, PredictionBasis, loss_scale
from lowrank_lab.prediction.build import dense_perplexity, prediction_basis
from lowrank_lab.prediction.fit import PRIOR_LOG_SD, LossFit, fit_loss

__all__ = [
    "PRIOR_LOG_SD",
    "LossFit",
    "Prediction",
    "PredictionBasis",
    "dense_perplexity",
    "fit_loss",
    "loss_scale",
    "prediction_basis",
]
