"""MT-CooL's networks (seed 002; our reconstruction, README "MT-CooL"): one whole network per task, each task reading
its own features fused with the other tasks'.

Fusion happens at the layers the backbone names for the chosen level (:attr:`MultiTaskModel.fusion_layers`): the
bottleneck, or every encoder scale (each a skip the decoder reads). The features a network *offers* the others are
those layers' outputs in a pass in which it reads nobody else's (:meth:`CooperativeModels.offered`); that keeps the
exchange acyclic at every scale, and at the bottleneck it is the feature the network's fused pass computes too. The
offering pass stops at the deepest fusion layer (what follows it is not needed), except under ``torch.export``
(MLflow's ``pt2`` model logging), which traces the whole pass and leaves the unused rest out of the graph.

``concat`` joins the K features of a layer along channels and maps them back to the layer's channels with a 1x1
convolution that starts as the identity on the network's own channels and zero on the others' (training starts
from STL's networks and learns what to take from the others); ``add`` adds the others' features to its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, cast

import torch
from torch import nn

from pipeline.models.base import MultiTaskModel
from pipeline.models.separate import SeparateTaskModels
from pipeline.tasks import Task

FusionMode = Literal["concat", "add", "none"]
FusionLevel = Literal["bottleneck", "every_scale"]


class Fusion(nn.Module):
    """Fuses one layer's own feature ``(B, C, h, w)`` with the other ``K - 1`` networks' (each ``(B, C, h, w)``,
    in task order) into ``(B, C, h, w)``.

    Args:
        mode: ``concat`` (a learned 1x1 convolution of the ``K * C`` joined channels, own first) or ``add``.
        channels: ``C``.
        num_tasks: ``K``.
    """

    def __init__(self, mode: FusionMode, channels: int, num_tasks: int):
        super().__init__()
        self.mode = mode
        self.mix = nn.Conv2d(num_tasks * channels, channels, kernel_size=1) if mode == "concat" else None
        if self.mix is not None:
            with torch.no_grad():
                self.mix.weight.zero_()
                self.mix.weight[:, :channels, 0, 0].copy_(torch.eye(channels))
                assert self.mix.bias is not None
                self.mix.bias.zero_()

    def forward(self, own: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.mix is not None:
            return self.mix(torch.cat([own, *(o.to(own.dtype) for o in others)], dim=1))
        return own + sum(o.to(own.dtype) for o in others)


class _Offered(Exception):
    """Ends an offering pass once the deepest fusion layer has run."""


class CooperativeModels(SeparateTaskModels):
    """One ``build(task)`` network per task (as :class:`SeparateTaskModels`), task ``k``'s fused with the others' at
    its ``fusion_layers[level]``.

    Args:
        tasks: the K tasks, a network each.
        build: the single-task network of a task (the configured backbone).
        fusion: ``concat``, ``add`` or ``none`` (no exchange: STL's networks).
        level: ``bottleneck`` or ``every_scale``; the backbone must name layers for it.
        example_shape: ``(C, S, S)`` of the images, to size the fusion layers.

    ``forward(x)`` ``(B, C, S, S)`` → ``{task: logits}``: every network's offered features, then each task's fused
    pass. Training takes those two steps apart (:meth:`offered`, :meth:`fused`) to hold the other tasks fixed.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        build: Callable[[Task], MultiTaskModel],
        fusion: FusionMode,
        level: FusionLevel,
        example_shape: tuple[int, int, int],
    ):
        super().__init__(tasks, build)
        backbone = type(self._each()[0][1])
        if fusion != "none" and level not in backbone.fusion_layers:
            raise ValueError(f"{backbone.name} offers fusion at {sorted(backbone.fusion_layers)}, not {level!r}")
        self.layers = () if fusion == "none" else backbone.fusion_layers[level]
        channels = self._layer_channels(example_shape)
        self.fusers = nn.ModuleDict(
            {name: nn.ModuleList(Fusion(fusion, c, len(self.task_names)) for c in channels) for name in self.task_names}
            if self.layers
            else {}
        )

    @property
    def fuses(self) -> bool:
        """Whether the tasks read each other's features (fusion is not ``none``)."""
        return bool(self.layers)

    def _layer_channels(self, example_shape: tuple[int, int, int]) -> list[int]:
        """Channels of each fusion layer's output, from an offering pass over one zero image (eval mode: no
        statistics move)."""
        if not self.layers:
            return []
        name = self.task_names[0]
        network = self.networks[name]
        was_training = network.training
        network.eval()
        with torch.no_grad():
            features = self.offered(torch.zeros(1, *example_shape), name)
        network.train(was_training)
        return [f.shape[1] for f in features]

    @contextlib.contextmanager
    def _hooked(self, task: str, hook: Callable[[int, torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
        """Run ``hook(i, output)`` on the output of fusion layer ``i`` of ``task``'s network (a returned tensor
        replaces the output) while the block runs."""
        network = self.networks[task]
        handles = [
            network.get_submodule(path).register_forward_hook(lambda module, inputs, output, i=i: hook(i, output))
            for i, path in enumerate(self.layers)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def offered(self, x: torch.Tensor, task: str) -> list[torch.Tensor]:
        """What ``task``'s network offers the others for images ``x`` ``(B, C, S, S)``: its fusion layers' outputs
        ``(B, C_l, h_l, w_l)``, shallow to deep, in a pass that reads no other network's features."""
        taken: dict[int, torch.Tensor] = {}

        def take(i: int, output: torch.Tensor) -> None:
            taken[i] = output
            if len(taken) == len(self.layers) and not torch.compiler.is_exporting():
                raise _Offered  # torch.export cannot trace an exception out of a module: it runs the rest, unused

        with self._hooked(task, take), contextlib.suppress(_Offered):
            self.networks[task](x)
        return [taken[i] for i in range(len(self.layers))]

    def fused(self, x: torch.Tensor, task: str, others: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """``task``'s logits for images ``x``, each fusion layer's output fused with ``others``: per other task, in
        task order, what it offers (:meth:`offered`, or a perturbation of it)."""

        def fuse(i: int, output: torch.Tensor) -> torch.Tensor:
            fusion = cast(nn.ModuleList, self.fusers[task])[i]
            return fusion(output, [features[i] for features in others])

        with self._hooked(task, fuse):
            return self.networks[task](x)[task]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """STL's split into features and heads, valid without fusion only: a fused task reads the others' features
        inside its network, not at its head."""
        if self.layers:
            raise TypeError("fused networks have no encode/decode split: call the model, or offered() and fused()")
        return super().encode(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        offers = {name: self.offered(x, name) if self.layers else [] for name in self.task_names}
        return {
            name: self.fused(x, name, [offers[other] for other in self.task_names if other != name])
            for name in self.task_names
        }

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Task ``task``'s network and the fusion layers through which it reads the others."""
        fusers = list(self.fusers[task].parameters()) if task in self.fusers else []
        return super().task_parameters(task) + fusers


@contextlib.contextmanager
def statistics_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` normalise by the batch's statistics (in training mode) without recording
    them: running means, variances and batch counts stay bit-identical."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True
