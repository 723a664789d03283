"""stablebptt: stabilized backpropagation through time for differentiable physics.

Train a controller through your own JAX simulator with the combined update::

    import stablebptt as sb
    problem = sb.ControlProblem(step=my_step, n_steps=100, final_loss=my_loss)
    result = sb.train(policy, problem, train_x, test_x, flow=sb.C(),
                      optimizer=sb.make_optimizer("none"), epochs=100)

The house, from the ground up: :mod:`~stablebptt.engine` (problem, flows,
rollouts, backward passes, updates, optimizers, networks),
:mod:`~stablebptt.training` (the paper's protocol: batches, epochs, metrics),
:mod:`~stablebptt.simulators` and :mod:`~stablebptt.tasks` (physics),
:mod:`~stablebptt.runs` (run folders, resume, one run, comparisons),
:mod:`~stablebptt.sweeps` (grids, backends, reports, claims),
:mod:`~stablebptt.paper` (the toy, LQ and Brax-peer reproductions),
:mod:`~stablebptt.tools` (bench, FLOPs, animation), :mod:`~stablebptt.plots`
and :mod:`~stablebptt.cli`. The public names are listed once, in
``__init__.pyi``, and load on first use.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

__version__ = "0.1.0"
