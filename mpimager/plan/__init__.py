"""Stage 3, the plan (pure): config + MS metadata to the jobs of a run (`jobs`), and a Slurm allocation sized from
those jobs (`sbatch`)."""

import sys as _sys
import types as _types


class _PlanPackage(_types.ModuleType):
    """`mpimager.plan` names both this stage package and the API function: calling it is `mpimager.api.plan`
    (importing mpimager.plan.jobs binds the package to the name, so the package itself must answer the call)."""

    def __call__(self, *args, **kwargs):
        from mpimager.api import plan

        return plan(*args, **kwargs)


_sys.modules[__name__].__class__ = _PlanPackage
