"""fastmi's losses as functions: re-exported from the family slices (each function's docstring gives
its formula; the conventions of the critic-score family are in ``fastmi.critic_lse.api``)."""
from .critic_lse.api import *  # noqa: F401,F403
from .critic_lse.api import __all__ as _critic_lse
from .critic_lse.sampled import shifted_negatives  # noqa: F401  (the index of negatives=k)
from .fd_jacobian.api import *  # noqa: F401,F403
from .fd_jacobian.api import __all__ as _fd_jacobian
from .gaussian_logdensity.api import *  # noqa: F401,F403
from .gaussian_logdensity.api import __all__ as _gaussian_logdensity
from .mmd_imq.api import *  # noqa: F401,F403
from .mmd_imq.api import __all__ as _mmd_imq
from .separable.api import *  # noqa: F401,F403
from .separable.api import __all__ as _separable
from .softmax_stats.api import *  # noqa: F401,F403
from .softmax_stats.api import __all__ as _softmax_stats

__all__ = [*_critic_lse, *_separable, *_gaussian_logdensity, *_fd_jacobian, *_mmd_imq, *_softmax_stats,
           "shifted_negatives"]
