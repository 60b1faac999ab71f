"""GPT Playground's library: a GPT-2 style model, tokenizers, data, trainer, sampler and checkpoints.

Nothing here imports Gradio; the web UI in `playground/` is built on top of it.
"""

from gpt.config import Config, DataConfig, ModelConfig, SampleConfig, TrainConfig
from gpt.errors import CheckpointError, UserInputError

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "CheckpointError",
    "UserInputError",
]
