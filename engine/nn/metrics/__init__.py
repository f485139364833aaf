"""Metrics of a model on data (tensors in, numbers out): the evaluation loop, IG, HS, AV,
attack effectiveness, gradient alignment and the weight-space Hessian."""
