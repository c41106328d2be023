"""Training: the LightningModule, callbacks and metrics (imported lazily, so downstream use
through joint_rag.pipeline does not import Lightning)."""

__all__ = ["IndexRefresh", "JointRAGModule", "LogProgress"]


def __getattr__(name: str):
    if name in ("IndexRefresh", "LogProgress"):
        from joint_rag.training import callbacks

        return getattr(callbacks, name)
    if name == "JointRAGModule":
        from joint_rag.training.module import JointRAGModule

        return JointRAGModule
    raise AttributeError(name)
