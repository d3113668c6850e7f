"""GPU and model catalog: memory, bandwidths, model shapes and KV bytes per token.

Names are case-insensitive and tolerant of ``_``/``.``/``-`` differences
(``Qwen2.5-7B`` == ``qwen2_5_7b``); unknown names raise a did-you-mean error.

Sources of the numbers:

- GPUs: vendor data sheets (HBM size and bandwidth); host-link bandwidths are the nominal
  PCIe figures of ``specs/latency-model.md`` section 3 (H800 64 GiB/s, others 32 GiB/s).
- Models: the ``config.json`` of each model's public Hugging Face release (layers, hidden
  size, FFN size, attention heads, KV heads, head dim) and its published parameter count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from servesim.errors import unknown_name

GiB = 1024**3
GB = 1e9


@dataclass(frozen=True)
class GPU:
    """One GPU type.

    Attributes:
        name: canonical name (``H800``).
        memory_bytes: HBM capacity in bytes.
        hbm_bandwidth: HBM bandwidth in bytes/s (roofline bound for decode).
        host_link_bandwidth: nominal host-to-device bandwidth in bytes/s (PCIe).
        ssd_bandwidth: local SSD read bandwidth in bytes/s (weights from SSD).
        remote_bandwidth: remote storage bandwidth in bytes/s (weights from remote).
    """

    name: str
    memory_bytes: float
    hbm_bandwidth: float
    host_link_bandwidth: float
    ssd_bandwidth: float = 4 * GB
    remote_bandwidth: float = 1.25 * GB
    profile_gpu: str | None = None

    @property
    def profile_name(self) -> str:
        """The GPU whose latency profiles this one uses (A10G uses the A10's)."""
        return self.profile_gpu or self.name


@dataclass(frozen=True)
class ModelShape:
    """The shape of a transformer model, enough to size weights and KV cache.

    Attributes:
        name: canonical name (``qwen2.5-7b``).
        layers: number of transformer layers.
        hidden: hidden size ``h``.
        ffn: FFN intermediate size ``m`` (per expert for MoE models).
        heads: attention heads.
        kv_heads: key/value heads (GQA models have fewer than ``heads``).
        head_dim: dimension of one head.
        params: parameter count.
        bytes_per_param: bytes per weight (2 for FP16/BF16).
        max_context: longest context (prompt + output) in tokens.
        tp: tensor-parallel degree this shape is meant for (1 unless the model needs more).
    """

    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    params: float
    bytes_per_param: int = 2
    max_context: int = 4096
    tp: int = 1
    aliases: tuple[str, ...] = field(default=(), compare=False)

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights (``params * bytes_per_param``)."""
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes per token: ``2 * layers * kv_heads * head_dim * bytes``."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_param

    @property
    def flops_per_token_factor(self) -> float:
        """``4h^2 + 2hm``: the DistServe per-token, per-layer linear-work factor."""
        return 4.0 * self.hidden**2 + 2.0 * self.hidden * self.ffn


GPUS: dict[str, GPU] = {
    g.name.lower(): g
    for g in (
        GPU("H800", 80 * GiB, 3.35e12, 64 * GiB),
        GPU("H100", 80 * GiB, 3.35e12, 32 * GiB),
        GPU("H20", 96 * GiB, 4.0e12, 32 * GiB),
        GPU("A100", 80 * GiB, 2.0e12, 32 * GiB),
        GPU("A10", 24 * GiB, 0.6e12, 32 * GiB),
        GPU("A10G", 24 * GiB, 0.6e12, 32 * GiB, profile_gpu="A10"),
    )
}

_MODELS = (
    ModelShape("qwen2.5-7b", 28, 3584, 18944, 28, 4, 128, 7.62e9, max_context=32768,
               aliases=("qwen2_5_7b",)),
    ModelShape("yi-1.5-9b", 48, 4096, 11008, 32, 4, 128, 8.83e9,
               aliases=("yi1_5_9b_chat", "yi-9b")),
    ModelShape("yi-1.5-6b", 32, 4096, 11008, 32, 4, 128, 6.06e9,
               aliases=("yi1_5_6b_chat", "yi-6b")),
    ModelShape("llama-2-7b", 32, 4096, 11008, 32, 32, 128, 6.74e9,
               aliases=("llama2_7b", "llama2-7b-chat", "llama-7b-hf")),
    ModelShape("llama-2-13b", 40, 5120, 13824, 40, 40, 128, 13.02e9,
               aliases=("llama2_13b_chat", "llama2-13b")),
    ModelShape("internlm2.5-7b", 32, 4096, 14336, 32, 8, 128, 7.74e9, max_context=32768,
               aliases=("internlm2_5_7b_chat",)),
    ModelShape("qwen1.5-14b", 40, 5120, 13696, 40, 40, 128, 14.17e9, max_context=32768,
               aliases=("qwen1_5_14b_chat", "qwen1.5-14b-chat")),
    ModelShape("llama-2-70b", 80, 8192, 28672, 64, 8, 128, 68.98e9, tp=4),
    ModelShape("qwen2.5-72b", 80, 8192, 29568, 64, 8, 128, 72.71e9, max_context=32768, tp=4),
    # Further models profiled in the Aegaeon artifact (shared/data/aegaeon/profiles).
    ModelShape("baichuan-7b", 32, 4096, 11008, 32, 32, 128, 7.0e9, aliases=("baichuan_7b",)),
    ModelShape("baichuan2-13b", 40, 5120, 13696, 40, 40, 128, 13.9e9,
               aliases=("baichuan2_13b_chat", "baichuan2-13b-chat")),
    ModelShape("llava-1.5-13b", 40, 5120, 13824, 40, 40, 128, 13.35e9,
               aliases=("llava1_5_13b",)),
    # MoE: 60 experts of FFN 1408 plus a shared expert; ``ffn`` is the active FFN width
    # (4 routed experts + shared 5632) used by the latency-factor display only.
    ModelShape("qwen1.5-moe-a2.7b", 24, 2048, 11264, 16, 16, 128, 14.32e9, max_context=8192,
               aliases=("qwen1_5_moe_a2_7b_chat", "qwen1.5-moe-a2.7b-chat")),
    ModelShape("qwen-14b", 40, 5120, 13696, 40, 40, 128, 14.17e9, max_context=8192,
               aliases=("qwen_14b_chat", "qwen-14b-chat")),
    ModelShape("qwen-7b", 32, 4096, 11008, 32, 32, 128, 7.72e9, max_context=8192,
               aliases=("qwen_7b", "qwen_7b_chat", "qwen-7b-chat")),
)

MODELS: dict[str, ModelShape] = {m.name: m for m in _MODELS}


def _key(name: str) -> str:
    """Normalise a catalog name: lower case, ``_`` -> ``-`` except between digits (2_5 -> 2.5)."""
    s = str(name).strip().lower()
    s = re.sub(r"(?<=\d)_(?=\d)", ".", s)
    return s.replace("_", "-")


_MODEL_INDEX: dict[str, str] = {}
for _m in _MODELS:
    _MODEL_INDEX[_key(_m.name)] = _m.name
    for _a in _m.aliases:
        _MODEL_INDEX[_key(_a)] = _m.name


def get_gpu(name: str) -> GPU:
    """Look up a GPU by name (case-insensitive); did-you-mean error when unknown."""
    gpu = GPUS.get(str(name).strip().lower())
    if gpu is None:
        raise unknown_name("GPU", name, [g.name for g in GPUS.values()])
    return gpu


def get_model(name: str) -> ModelShape:
    """Look up a model shape by name or alias (case-insensitive)."""
    canonical = _MODEL_INDEX.get(_key(name))
    if canonical is None:
        raise unknown_name("model", name, MODELS)
    return MODELS[canonical]


def model_names() -> list[str]:
    """Canonical model names of the catalog."""
    return sorted(MODELS)


def gpu_names() -> list[str]:
    """Canonical GPU names of the catalog."""
    return [g.name for g in GPUS.values()]


def custom_model(name: str, base: ModelShape | None = None, **shape: float) -> ModelShape:
    """Build a model shape from a catalog base and/or inline fields."""
    if base is None:
        return ModelShape(name=name, **shape)  # type: ignore[arg-type]
    return replace(base, name=name, aliases=(), **shape)  # type: ignore[arg-type]
