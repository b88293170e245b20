"""Generative crystal structure prediction: a DiffCSP-style diffusion sampler on the
equivariant backbone of :mod:`jcsp.ml`.

- :mod:`.diffusion`: the noise processes (DDPM on the lattice, wrapped normal on the
  fractional coordinates) and their schedules;
- :mod:`.denoiser`: the network, jcsp.ml's interaction layers on a fully connected crystal
  graph;
- :mod:`.sampling`: the predictor-corrector reverse diffusion, one jitted scan per batch;
- :mod:`.training`: the optax training loop (EMA, schedule, time budget, resume);
- :mod:`.data`: crystal collections (Perov-5, CSV/extxyz/CIF) as padded arrays;
- :mod:`.evaluate`: DiffCSP's match rate / RMSE protocol (pymatgen, optional);
- :mod:`.model`: saving, loading and sampling a trained generator.

``jcsp.generate(model, compositions, n_samples=20, seed=0)`` samples crystals;
``jcsp.generative.load(name_or_path)`` loads a model (``"perov-5"`` ships with jcsp), which
``jcsp.search(..., generator=model)`` uses for its candidates.
"""

from .model import GenerativeModel, composition_numbers, generate, load, save
from .training import GeneratorTrainConfig, train

__all__ = ["GenerativeModel", "GeneratorTrainConfig", "composition_numbers", "generate",
           "load", "save", "train"]
