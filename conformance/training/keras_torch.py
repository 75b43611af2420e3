"""Opt-in Keras classes that train as PyTorch does, where the stock Keras class differs.

- :class:`UnbiasedBatchNormalization`: ``BatchNormalization`` whose moving variance is updated
  with the unbiased batch variance (times n/(n-1), n = the elements reduced per channel), as
  torch's ``running_var`` is. The output in training mode still uses the biased variance, as in
  both frameworks.
- :class:`TorchAdam`: ``Adam`` with torch's epsilon convention, ``eps`` added to
  ``sqrt(v_hat)`` rather than to ``sqrt(v)``.

Both are registered under the package ``conformance``, so models that use them save and load
in Keras's safe mode (``keras.saving.load_model(path)``) once this module is imported.
"""

from __future__ import annotations

import math
from typing import Any

import torch  # noqa: F401  (torch before TensorFlow: the other order has crashed)

# isort: split
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="conformance")
class UnbiasedBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` that updates ``moving_variance`` as torch updates ``running_var``.

    torch: ``running_var = (1 - m) * running_var + m * var * n / (n - 1)``; stock Keras uses
    ``var`` (biased). With one element per channel (n = 1) torch would divide by zero; this
    layer then leaves the variance unscaled, as the factor is undefined.
    """

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not (training and self.trainable) or self.renorm or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(x, None)
        n = math.prod(int(inputs.shape[a]) for a in self._reduction_axes)
        unbiased = variance * (n / (n - 1)) if n > 1 else variance
        momentum = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(ops.cast(self.moving_variance, x.dtype) * momentum
                                    + unbiased * (1.0 - momentum))
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        out = ops.batch_normalization(x=x, mean=mean, variance=variance, axis=self.axis, offset=beta,
                                      scale=gamma, epsilon=self.epsilon)
        return ops.cast(out, self.compute_dtype)


@keras.saving.register_keras_serializable(package="conformance")
class TorchAdam(keras.optimizers.Adam):
    """``Adam`` (and AMSGrad) with torch's epsilon: ``lr * m_hat / (sqrt(v_hat) + eps)``.

    Stock Keras computes ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, which is
    torch's formula with ``eps`` replaced by ``eps / sqrt(1 - b2^t)`` (a step-dependent factor, so
    no constant mapping of ``eps`` makes them equal).
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        correction1 = 1 - ops.power(ops.cast(self.beta_1, variable.dtype), step)
        correction2 = 1 - ops.power(ops.cast(self.beta_2, variable.dtype), step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        denominator = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(correction2)), self.epsilon)
        self.assign_sub(variable, ops.divide(ops.multiply(m, lr / correction1), denominator))


def with_unbiased_batch_norm(model: Any) -> Any:
    """A copy of ``model`` with every ``BatchNormalization`` replaced by the unbiased one, weights kept."""
    def swap(layer: Any) -> Any:
        if type(layer) is keras.layers.BatchNormalization:
            return UnbiasedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())
    copy = keras.models.clone_model(model, clone_function=swap, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
