"""The project's error types: bad input that ``jrag`` reports in one line.

Every message says what is wrong and where (file, line, field) and, where there is one, what to
do. ``jrag`` prints ``jrag <command>: error: <message>`` and exits 2 for these (and for config
``ValueError``s); ``--traceback`` or ``JRAG_TRACEBACK=1`` shows the full trace instead.
"""

from __future__ import annotations


class JointRAGError(ValueError):
    """Base class: input the user can fix (data, backbones, configs, exports, indexes, grids)."""


class DataError(JointRAGError):
    """Malformed or inconsistent input data. The message names the file, line/field and problem."""


class BackboneError(JointRAGError):
    """Unknown preset, missing package or unloadable model."""


class ExportError(JointRAGError):
    """An export cannot be written (missing checkpoint, no config, output exists, ...)."""


class ExportFormatError(JointRAGError):
    """An exported folder is missing files or holds invalid ones. The message names the file."""


class IndexFormatError(JointRAGError):
    """An index folder is missing files or its files disagree. The message names the folder."""


class GridError(JointRAGError):
    """A malformed ablation grid file (the message names the file and the field)."""


class DivergenceError(JointRAGError):
    """Training produced a non-finite loss, gradient or weight: the fit stops (no checkpoint of
    non-finite weights is written). The message names the step, the loss terms and the
    learning rates."""
