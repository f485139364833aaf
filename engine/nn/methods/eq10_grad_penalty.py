"""Eq. 10 ablation (Li & Spratling 2023, Sec. 4.2, Fig. 2 right): standard training with an
input-gradient penalty ("ST + IGR"), no attack.

    loss = CE_mean(f(x), y) + beta * || d CE_mean(f(x), y) / dx ||_2^2      beta = method.lam

The gradient and its normalisation are IGR's (see igr.py): of the batch-mean CE w.r.t. the
whole batch tensor, squared norm summed over it (= (1/B) mean_i ||grad CE_i||^2). One forward
pass serves both terms. beta = 0 is plain standard training (the sweep's baseline): the
gradient is then only logged (`reg`), without the double-backprop graph.
"""

from engine.nn.methods import register
from engine.nn.methods.penalties import input_grad, sq_norm


@register(
    "eq10_grad_penalty",
    fixed_attack="none",
    needs=("double_backprop",),
    doc="Eq. 10 ablation: standard training + beta * ||grad_x CE_mean(x)||^2, beta = method.lam.",
)
def eq10_grad_penalty(model, x, y, ctx):
    g, logits, ce = input_grad(model, x, y, create_graph=ctx.lam != 0, retain_graph=True)
    reg = sq_norm(g)
    loss = ce + ctx.lam * reg if ctx.lam != 0 else ce
    return loss, {"logits": logits, "reg": reg.detach()}
