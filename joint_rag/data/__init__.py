"""Data: one Corpus/Example format, readers, the synthetic knowledge base, the DataModule."""

from joint_rag.data.corpus import Corpus, DataError, DataSource, Example, Passage, RAGData
from joint_rag.data.datamodule import RAGDataModule
from joint_rag.data.formats import BeirSource, HotpotQASource, SquadSource
from joint_rag.data.synthetic import SyntheticSource

__all__ = [
    "BeirSource",
    "Corpus",
    "DataError",
    "DataSource",
    "Example",
    "HotpotQASource",
    "Passage",
    "RAGData",
    "RAGDataModule",
    "SquadSource",
    "SyntheticSource",
]
