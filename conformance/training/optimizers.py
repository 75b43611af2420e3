"""``keras_optimizer_for(torch_optimizer)``: the Keras optimizer that takes the same steps.

Mapped (checked against Keras 3.15's ``sgd.py``, ``adam.py`` and ``base_optimizer.py``, and by
the optimizer-step scenarios):

- SGD: ``lr``, ``momentum`` and ``nesterov`` map one to one. torch keeps ``b = mu*b + g`` and
  steps ``-lr*b`` (nesterov ``-lr*(g + mu*b)``); Keras keeps ``m = mu*m - lr*g`` and steps ``+m``
  (nesterov ``mu*m - lr*g``): with a constant ``lr``, ``m = -lr*b``, the same steps.
  ``dampening`` has no Keras counterpart and is refused unless it is 0 (or momentum is 0).
  ``weight_decay``: torch adds ``wd*p`` to the gradient (L2, which then enters the momentum
  buffer); Keras's ``weight_decay`` is decoupled (``p -= lr*wd*p`` before the step). Without
  momentum the two are the same step, so it is mapped; with momentum they differ and it is
  refused (add the L2 term to the Keras loss instead).
- Adam / AdamW: ``lr``, ``betas`` -> ``beta_1, beta_2``, ``amsgrad``. AdamW's ``weight_decay``
  (and Adam's with ``decoupled_weight_decay=True``) is ``p *= 1 - lr*wd`` before the step, as
  Keras's; Adam's coupled (L2) ``weight_decay`` is refused. ``eps``: see :data:`ADAM_EPSILON`;
  ``epsilon="torch"`` (the default) gives :class:`~conformance.training.keras_torch.TorchAdam`,
  which adds eps as torch does; ``epsilon="keras"`` gives stock ``keras.optimizers.Adam`` with the
  same ``eps``, which differs by the recorded divergence.
- ``maximize=True`` and several parameter groups with different settings are refused.
  ``foreach``, ``fused``, ``capturable`` and ``differentiable`` choose an implementation, not
  the arithmetic, and are ignored.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConformanceError
from .results import Divergence

ADAM_EPSILON = Divergence(
    rule="adam-epsilon-convention",
    reason=("torch Adam steps lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m/(1-b1^t), v_hat = v/(1-b2^t); "
            "Keras 3 Adam steps lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps), i.e. torch's formula with "
            "eps replaced by eps/sqrt(1-b2^t). The factor depends on the step t, so no constant eps maps one "
            "onto the other; the difference matters where sqrt(v_hat) is not large against eps."),
    tensors=("*",), factor="eps_torch_equivalent = eps_keras / sqrt(1 - beta_2**t)")

SGD_WEIGHT_DECAY = Divergence(
    rule="sgd-weight-decay-coupling",
    reason=("torch SGD adds weight_decay * p to the gradient (L2), so with momentum the decay enters the "
            "momentum buffer; Keras's weight_decay is decoupled: p -= lr * weight_decay * p before the step."),
    tensors=("*weight", "*bias"), factor=None)

_IMPLEMENTATION_ONLY = {"foreach", "fused", "capturable", "differentiable", "params", "initial_lr"}


class OptimizerMappingError(ConformanceError):
    """A torch optimizer setting that the Keras optimizers cannot reproduce; names the parameter."""


def _group(torch_optimizer: Any) -> dict[str, Any]:
    groups = torch_optimizer.param_groups
    name = type(torch_optimizer).__name__
    for index, group in enumerate(groups[1:], start=1):
        for key, value in group.items():
            if key != "params" and value != groups[0].get(key):
                raise OptimizerMappingError(
                    f"{name}: parameter group {index} sets {key}={value!r} but group 0 has {groups[0].get(key)!r}; "
                    f"one Keras optimizer applies one setting to every variable")
    return {k: v for k, v in groups[0].items() if k not in _IMPLEMENTATION_ONLY}


def _refuse(name: str, key: str, value: Any, why: str) -> OptimizerMappingError:
    return OptimizerMappingError(f"{name}: cannot map {key}={value!r} to Keras: {why}")


def _check_known(name: str, group: dict[str, Any], known: set[str]) -> None:
    for key in group:
        if key not in known:
            raise _refuse(name, key, group[key], "this parameter is not mapped (unknown to conformance)")


def keras_optimizer_for(torch_optimizer: Any, *, epsilon: str = "torch") -> Any:
    """The Keras optimizer whose steps match ``torch_optimizer`` (``torch.optim.SGD``, ``Adam``, ``AdamW``).

    Raises :class:`OptimizerMappingError` naming the parameter that cannot be mapped.
    ``epsilon`` chooses the Adam epsilon convention: ``"torch"`` (exact, :class:`TorchAdam`) or
    ``"keras"`` (stock ``keras.optimizers.Adam``, the recorded divergence :data:`ADAM_EPSILON`).
    """
    if epsilon not in ("torch", "keras"):
        raise ValueError(f"epsilon must be 'torch' or 'keras', got {epsilon!r}")
    name = type(torch_optimizer).__name__
    group = _group(torch_optimizer)
    if group.get("maximize"):
        raise _refuse(name, "maximize", True, "Keras optimizers only minimise; negate the loss instead")
    lr = float(group["lr"])
    import keras
    if name == "SGD":
        _check_known(name, group, {"lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize"})
        momentum, wd = float(group.get("momentum", 0.0)), float(group.get("weight_decay", 0.0))
        if momentum and group.get("dampening", 0.0):
            raise _refuse(name, "dampening", group["dampening"], "Keras SGD has no dampening (it is always 0)")
        if wd and momentum:
            raise _refuse(name, "weight_decay", wd,
                          f"{SGD_WEIGHT_DECAY.reason} With momentum={momentum} the steps differ; add "
                          f"0.5 * weight_decay * sum(p**2) to the Keras loss instead")
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, nesterov=bool(group.get("nesterov")),
                                    weight_decay=wd or None)
    if name in ("Adam", "AdamW"):
        _check_known(name, group, {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                                   "decoupled_weight_decay"})
        wd = float(group.get("weight_decay", 0.0))
        decoupled = name == "AdamW" or bool(group.get("decoupled_weight_decay"))
        if wd and not decoupled:
            raise _refuse(name, "weight_decay", wd,
                          "torch Adam's weight_decay is L2 added to the gradient (then scaled by Adam's "
                          "normalisation); Keras's is decoupled as in AdamW. Use torch.optim.AdamW, or add "
                          "the L2 term to the Keras loss")
        beta_1, beta_2 = (float(b) for b in group["betas"])
        kwargs = dict(learning_rate=lr, beta_1=beta_1, beta_2=beta_2, epsilon=float(group["eps"]),
                      amsgrad=bool(group.get("amsgrad")), weight_decay=wd or None)
        if epsilon == "torch":
            from .keras_torch import TorchAdam
            return TorchAdam(**kwargs)
        return keras.optimizers.Adam(**kwargs)
    raise OptimizerMappingError(f"{name}: no Keras mapping for this optimizer class (mapped: SGD, Adam, AdamW)")
