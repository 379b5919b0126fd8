"""What the scenario's tables are built from: a strict struct base (an unknown key is an
error) and the random durations and probabilities they describe, drawn only from a generator
the caller passes (one seeded ``random.Random`` per simulation, split per agent)."""

from __future__ import annotations

import math
import random
from typing import Annotated, Literal

import msgspec

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Distribution(Strict):
    """A positive random duration in seconds: ``exponential`` (mean), ``lognormal`` (mean and
    sigma, the shape of the underlying normal) or ``fixed`` (always the mean)."""

    mean: Positive
    kind: Literal["exponential", "lognormal", "fixed"] = "exponential"
    sigma: Annotated[float, msgspec.Meta(gt=0, le=5)] = 0.5

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.mean
        if self.kind == "lognormal":
            mu = math.log(self.mean) - self.sigma**2 / 2
            return rng.lognormvariate(mu, self.sigma)
        return rng.expovariate(1.0 / self.mean)
