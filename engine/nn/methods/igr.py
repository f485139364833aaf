"""IGR: input gradient regularisation (Ross & Doshi-Velez 2018, "Improving the adversarial
robustness and interpretability of deep neural networks by regularizing their input
gradients", AAAI), added to adversarial training as in Li & Spratling 2023, Sec. 5.1.

    loss = CE_mean(f(x + delta), y) + lambda * || d CE_mean(f(x), y) / dx ||_2^2

- The gradient is that of the batch-*mean* CE w.r.t. the whole clean batch tensor x (double
  backprop, create_graph=True), and the squared norm is summed over the batch tensor:
  ||g||^2 = sum_i ||grad CE_i||^2 / B^2 = (1/B) * mean_i ||grad CE_i||^2.
  Why: this is how the paper's IG metric takes the gradient (of the mean loss over a batch of
  100), and it is the only reading under which lambda = 1200 (FGSM-N) / 1000 (PGD10) is sane
  on CIFAR-10. Table 1's IG (mean per-sample l1 norm over 3072 inputs) is 48 for FGSM-N AT
  and 25 with IGR, so ||g_i||_2^2 >= IG^2 / 3072 is at least 0.75 resp. 0.2: lambda times the
  mean per-sample squared norm would be >= 900 resp. 240, hundreds of times the CE (~1), while
  lambda * ||g||^2 = (lambda / B) * mean_i ||g_i||^2 is >= 9 resp. 2.4: strong, not absurd.
  Consequence: the effective per-sample strength is lambda / B (the paper's B is 100), so a
  strength does not carry over to another batch size unchanged.
- The gradient is taken at the clean x (the original), in the mode the trainer put the model
  in (train), with its own forward pass: the training attack returns only the sign of its
  first gradient, computed without create_graph, so it cannot be reused.
"""

from engine.nn.methods import register
from engine.nn.methods.penalties import adversarial_ce_plus, input_grad, sq_norm


def grad_penalty(model, x, y):
    """(||d CE_mean / dx||^2 with its graph for double backprop, clean logits, clean CE)."""
    g, logits, loss = input_grad(model, x, y, create_graph=True)
    return sq_norm(g), logits, loss


@register(
    "igr",
    lam="> 0",
    paper_lam=(1200.0, 1000.0),
    needs=("double_backprop",),
    lam_error="IGR needs lambda > 0 (paper: 1200 with FGSM-N, 1000 with PGD10)",
    doc="IGR (Ross & Doshi-Velez 2018): adversarial CE + lambda * ||grad_x CE_mean(x)||^2 (double backprop).",
)
def igr(model, x, y, ctx):
    return adversarial_ce_plus(model, x, y, ctx, lambda: grad_penalty(model, x, y)[0])
