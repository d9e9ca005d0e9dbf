"""fastmi's losses as nn.Modules: re-exported from the family slices. Constructor arguments are the
loss's options; forward takes the per-call inputs."""
from .critic_lse.nn import *  # noqa: F401,F403
from .critic_lse.nn import __all__ as _critic_lse
from .estimation.critics import *  # noqa: F401,F403
from .estimation.critics import __all__ as _critics
from .fd_jacobian.nn import *  # noqa: F401,F403
from .fd_jacobian.nn import __all__ as _fd_jacobian
from .gaussian_logdensity.nn import *  # noqa: F401,F403
from .gaussian_logdensity.nn import __all__ as _gaussian_logdensity
from .mmd_imq.nn import *  # noqa: F401,F403
from .mmd_imq.nn import __all__ as _mmd_imq
from .separable.nn import *  # noqa: F401,F403
from .separable.nn import __all__ as _separable
from .softmax_stats.nn import *  # noqa: F401,F403
from .softmax_stats.nn import __all__ as _softmax_stats

__all__ = [*_critic_lse, *_separable, *_gaussian_logdensity, *_critics, *_fd_jacobian, *_mmd_imq, *_softmax_stats]
