"""Data: the types (Corpus, Example, ...), one reader per format, the fictional knowledge base
and its source, instruction data, splits and collation. Nothing here imports Lightning (the
DataModule is ``joint_rag.training.datamodule``)."""

from joint_rag.data.formats import BeirSource, HotpotQASource, SquadSource
from joint_rag.data.synthetic import SyntheticSource
from joint_rag.data.types import Corpus, DataError, DataSource, Example, InstructionPair, Passage, RAGData

__all__ = [
    "BeirSource",
    "Corpus",
    "DataError",
    "DataSource",
    "Example",
    "HotpotQASource",
    "InstructionPair",
    "Passage",
    "RAGData",
    "SquadSource",
    "SyntheticSource",
]
