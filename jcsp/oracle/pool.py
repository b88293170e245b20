"""The :class:`Oracle`: single points in this process or in a pool of processes (host side).

See :mod:`jcsp.oracle`. A spec string may run in a ``concurrent.futures``
``ProcessPoolExecutor`` (``spawn`` processes, each building its own calculator from the
spec once, on its first call); a calculator object always runs in this process.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
import warnings
from typing import Callable, Mapping, Sequence

from ase import Atoms

from ..calculator import JCSPCalculator
from ..potentials.base import Potential
from .calculators import (ORACLE_FORMS, Label, OracleError, failed_label, python_factory, build,
                          single_point)

# --- the worker side of the pool ------------------------------------------------------------
_WORKER: dict = {}


def _worker_init(spec, base) -> None:
    _WORKER.clear()
    _WORKER.update(spec=spec, base=base, calc=None)


def _worker_ready():
    """Runs in a pool process: builds the calculator; ("ok", None) or ("build", message)."""
    if _WORKER["calc"] is None:
        try:
            _WORKER["calc"] = build(_WORKER["spec"], _WORKER["base"])
        except Exception as err:  # noqa: BLE001 (reported to the parent as an OracleError)
            return "build", f"{type(err).__name__}: {err}"
    return "ok", None


def _worker_single_point(atoms: Atoms):
    """Runs in a pool process: ("ok", Label) or ("build", message) if the calculator
    itself cannot be built there."""
    status, message = _worker_ready()
    if status != "ok":
        return status, message
    return "ok", single_point(_WORKER["calc"], atoms)


# --- the oracle ------------------------------------------------------------------------------
class Oracle:
    """Single points from one reference method, in this process or in a process pool.

    Build it with :func:`make_oracle`. ``n_calls`` counts the single points it computed,
    ``seconds`` their summed wall time (per call, measured where the call ran) and
    ``wall_seconds`` the time spent inside :meth:`compute`. A context manager: leaving it
    shuts the pool down (:meth:`close`).
    """

    def __init__(self, *, calculator=None, spec=None, workers: int = 1, base: str | None = None,
                 description: str):
        self._calc = calculator
        self._spec = spec
        self._base = base
        self.workers = workers
        self._description = description
        self._pool: cf.ProcessPoolExecutor | None = None
        self.n_calls = 0
        self.seconds = 0.0
        self.wall_seconds = 0.0

    def describe(self) -> str:
        """What the oracle is, for records: the spec, or ``"ASE <class name>"``."""
        return self._description

    def __repr__(self) -> str:
        return f"Oracle({self._description!r}, workers={self.workers})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Shut the worker pool down (a later :meth:`compute` starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def compute(self, structures: Sequence[Atoms],
                on_result: Callable[[int, Label], None] | None = None) -> list[Label]:
        """Single points of ``structures``, returned in their order.

        Args:
          structures: ``ase.Atoms`` (not modified).
          on_result: called as ``on_result(i, label)`` the moment structure ``i``'s result
            returns (completion order with a pool), e.g. to save it at once.

        A structure whose call fails gets a :class:`Label` with ``error`` set; the others
        are unaffected. Raises :class:`OracleError` only if the calculator cannot be
        built at all.
        """
        structures = list(structures)
        labels: list[Label | None] = [None] * len(structures)
        start = time.perf_counter()

        def done(i, label):
            labels[i] = label
            self.n_calls += 1
            self.seconds += label.seconds
            if on_result is not None:
                on_result(i, label)

        try:
            if self._calc is not None:
                for i, atoms in enumerate(structures):
                    done(i, single_point(self._calc, atoms))
            else:
                self._pooled(structures, done)
        finally:
            self.wall_seconds += time.perf_counter() - start
        return labels

    def _new_pool(self, workers: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=workers,
                                      mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init, initargs=(self._spec, self._base))

    def _pooled(self, structures, done) -> None:
        """Run in the pool. A worker process that dies (a crash of the oracle's code) breaks
        the pool: the structures it took down are run again one at a time in a one-worker
        pool that has first built its calculator (a pool whose workers die on start-up
        raises :class:`OracleError` instead); the structure that kills that worker gets a
        failed label, and a fresh one-worker pool takes the rest."""
        if self._pool is None:
            self._pool = self._new_pool(self.workers)
        broken = self._run_in(self._pool, list(enumerate(structures)), done)
        if not broken:
            return
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        single = None
        try:
            for i, atoms in broken:
                if single is None:
                    single = self._new_pool(1)
                    self._check_ready(single)
                start = time.perf_counter()
                if self._run_in(single, [(i, atoms)], done):
                    done(i, failed_label(time.perf_counter() - start,
                                         "the oracle's worker process died computing this "
                                         "structure (twice)"))
                    single.shutdown(wait=True, cancel_futures=True)
                    single = None
        finally:
            if single is not None:
                single.shutdown(wait=True, cancel_futures=True)

    def _check_ready(self, pool) -> None:
        """Raise OracleError unless a worker of ``pool`` starts and builds the calculator."""
        try:
            status, message = pool.submit(_worker_ready).result()
        except cf.process.BrokenProcessPool as err:
            raise OracleError(f"the worker processes of oracle {self._description!r} die on "
                              f"start-up ({err}); a script that uses workers > 1 must start "
                              "its work under `if __name__ == '__main__':`") from None
        if status != "ok":
            raise OracleError(f"oracle {self._description!r} could not be built in a worker "
                              f"process: {message}")

    def _run_in(self, pool, items, done) -> list:
        """Submit ``items`` ((index, atoms) pairs) to ``pool``; report each result with
        ``done``; return the items whose worker died."""
        futures = {}
        try:
            for i, atoms in items:
                plain = atoms.copy()
                plain.calc = None
                futures[pool.submit(_worker_single_point, plain)] = (i, atoms)
        except cf.process.BrokenProcessPool:
            pass
        broken = items[len(futures):]
        try:
            for future in cf.as_completed(futures):
                try:
                    status, value = future.result()
                except cf.process.BrokenProcessPool:
                    broken.append(futures[future])
                    continue
                if status == "build":
                    raise OracleError(f"oracle {self._description!r} could not be built in "
                                      f"a worker process: {value}")
                done(futures[future][0], value)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return sorted(broken, key=lambda item: item[0])


def make_oracle(spec_or_calculator, workers: int | None = None) -> Oracle:
    """An :class:`Oracle` from a spec string, a jcsp potential or an ASE calculator.

    Args:
      spec_or_calculator: one of

        * ``"tblite:GFN1-xTB"``, ``"tblite:GFN2-xTB"`` (optionally ``,key=value`` options
          of ``tblite.ase.TBLite``; output is silenced with ``verbosity=0``);
        * ``"gpaw:key=value,..."``: ``GPAW(**options)`` (values are Python literals,
          ``txt=None`` unless given);
        * ``"python:module:factory"``: ``factory()`` returns an ASE calculator;
        * any jcsp potential spec (:func:`jcsp.potential_spec.load_potential`: ``sw-si``,
          ``FILE.sw``, ``FILE.eam.alloy``, ``lj:...``, ``gulp:...``, ``FILE.toml``, a
          model directory) or a potential table mapping, wrapped in
          :class:`jcsp.JCSPCalculator`; or a :class:`jcsp.potentials.Potential`;
        * an ASE calculator object;
        * an :class:`Oracle` (returned as it is).
      workers: processes that run calls concurrently (default 1: in this process). Only
        spec strings can use a pool (``spawn`` processes, each building its own calculator
        from the spec once); a calculator or potential object is always called in this
        process, one structure at a time, so that it sees every call.

    Raises:
      OracleError: an unknown spec (the message lists the forms), a missing package
        (tblite, GPAW), a factory that cannot be imported, or bad ``workers``.
    """
    workers = 1 if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise OracleError(f"workers must be a whole number >= 1, not {workers!r}")
    obj = spec_or_calculator
    if isinstance(obj, Oracle):
        return obj
    if isinstance(obj, Potential):
        obj = JCSPCalculator(obj)
    if not isinstance(obj, (str, os.PathLike, Mapping)):
        if not (hasattr(obj, "get_potential_energy") or hasattr(obj, "calculate")):
            forms = "\n  ".join(ORACLE_FORMS)
            raise OracleError(f"an oracle is one of:\n  {forms}\nnot a {type(obj).__name__}")
        if workers > 1:
            warnings.warn("a calculator object is called in this process, one structure at "
                          "a time; give a spec string to use a pool of workers", stacklevel=2)
        name = type(obj.potential).__name__ if isinstance(obj, JCSPCalculator) else None
        description = f"jcsp {name}" if name else f"ASE {type(obj).__name__}"
        return Oracle(calculator=obj, workers=1, description=description)
    spec = os.fspath(obj) if isinstance(obj, os.PathLike) else obj
    description = spec if isinstance(spec, str) else f"potential table {dict(spec)!r}"
    base = os.getcwd()
    if workers == 1:
        return Oracle(calculator=build(spec, base), workers=1, base=base,
                      description=description)
    # Checked here, built in each worker: a bad spec fails now, not in every process.
    if isinstance(spec, str) and spec.startswith("python:"):
        python_factory(spec.partition(":")[2], spec)
    else:
        build(spec, base)
    return Oracle(spec=spec, workers=workers, base=base, description=description)
