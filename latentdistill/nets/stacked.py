"""Many copies of one network as one batched model: the fast path for training several networks at once.

Dataset distillation trains many small networks of the same architecture: the experts of a trajectory
buffer, the runs of an evaluation row. On a GPU each of them alone is launch-bound (a ConvNet-3 on 256
images is microseconds of arithmetic per kernel), so training them one after another wastes the card.
``StackedNetworks`` holds E copies' parameters stacked on a leading axis and runs them as one model
with ``torch.func.vmap`` over ``functional_call``: one kernel launch per layer for all E, each copy
still with its own weights, inputs and gradients. An optimizer over the stacked tensors is E
independent optimizers (SGD, momentum and weight decay act elementwise).

Only networks without buffers batch this way: batch norm's running statistics are state that
``vmap`` cannot update in place, so ``can_stack`` says no and callers train those one at a time.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def can_stack(net: nn.Module) -> bool:
    """Whether ``net`` computes each image on its own and deterministically, which batching over classes or
    copies needs: no batch norm (its statistics couple a batch's images, and its running statistics are state
    that ``vmap`` cannot update), no buffers of any kind, and no active dropout (its draws would differ from
    the one-at-a-time path, and ``torch.func.grad`` under ``vmap`` refuses random operations)."""
    if any(True for _ in net.buffers()):
        return False
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return False
    return True


class StackedNetworks:
    """E networks of one architecture as stacked parameters; ``self(x)`` maps (E, B, ...) to (E, B, ...)."""

    def __init__(self, networks: list[nn.Module]) -> None:
        if not networks or not all(can_stack(net) for net in networks):
            raise ValueError("StackedNetworks needs one or more networks without batch norm, buffers or dropout")
        params, _ = stack_module_state(networks)
        self.params = {name: tensor.detach().requires_grad_(True) for name, tensor in params.items()}
        self.networks = networks  # where ``unstacked`` writes the trained parameters back
        # A skeleton without storage: functional_call supplies every parameter.
        self.skeleton = copy.deepcopy(networks[0]).to("meta")

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> StackedNetworks:
        self.skeleton.train(mode)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Run copy e on ``images[e]``: (E, B, ...) in, (E, B, ...) out."""
        return self._call(self.params, images)

    def _call(self, params: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return vmap(lambda values, x: functional_call(self.skeleton, values, (x,)))(params, images)

    def compile(self) -> None:
        """``torch.compile`` the batched call, as ``nn.Module.compile`` does for one network."""
        self._call = torch.compile(self._call)

    def unstacked(self) -> list[nn.Module]:
        """The E networks with the stacked parameters written back into them."""
        with torch.no_grad():
            for index, net in enumerate(self.networks):
                for name, parameter in net.named_parameters():
                    parameter.copy_(self.params[name][index])
        return self.networks
