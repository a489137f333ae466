"""kvtier.offload's array backend for torch tensors (CPU or CUDA), used by kvtier.hf_cache.

Layers' K and V are `[batch, kv_heads, seq, head_dim]` tensors on the model's device. Blocks
leave that device as NumPy arrays in kvtier's token-major block layout (the transpose runs on
the device, then one copy to host); bfloat16, which NumPy lacks, travels as its raw int16 bits.

On CUDA, blocks read back ahead of need are copied host -> device on a side stream from the
offloader's side thread (pinned staging, non_blocking), and the consumer's stream waits on an
event, so the copy of layer i+1 overlaps the attention of layer i.
"""

import numpy as np
import torch

_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _torchable(blocks):
    # bfloat16 blocks load as uint16, which older torch cannot wrap: same bits as int16.
    blocks = np.ascontiguousarray(blocks)
    return blocks.view(np.int16) if blocks.dtype == np.uint16 else blocks


class _Staged:
    """Blocks already on their way to the device: a tensor and the event that marks it."""

    def __init__(self, tensor, event):
        self.tensor = tensor
        self.event = event


class TorchBackend:
    def __init__(self, device=None):
        # The device of the layers; learnt from the first tensor when None.
        self.device = torch.device(device) if device is not None else None
        self._side_stream = None

    def seq_len(self, x):
        return x.shape[-2]

    def cat(self, a, b):
        return torch.cat([a, b], dim=-2)

    def slice_seq(self, x, start, stop):
        # A copy, not a view: the whole tensor it came from is to be freed.
        return x[:, :, start:stop, :].clone()

    def empty_like(self, x):
        if self.device is None:
            self.device = x.device
        return x[:, :, :0, :]

    def dtype_name(self, x):
        name = _DTYPES.get(x.dtype)
        if name is None:
            raise ValueError(f"kvtier offload: tensors of dtype {x.dtype} are not supported "
                             "(float16, bfloat16 or float32)")
        return name

    def to_blocks(self, k, v, first, count, block_tokens):
        b, h, _, d = k.shape
        t0, t1 = first * block_tokens, (first + count) * block_tokens
        kk = k[:, :, t0:t1, :].reshape(b, h, count, block_tokens, d).permute(0, 2, 3, 1, 4)
        vv = v[:, :, t0:t1, :].reshape(b, h, count, block_tokens, d).permute(0, 2, 3, 1, 4)
        blocks = torch.stack([kk, vv], dim=2).reshape(b * count, 1, 2, block_tokens, h, d)
        blocks = blocks.contiguous()
        if blocks.dtype == torch.bfloat16:
            blocks = blocks.view(torch.int16)
        # .cpu() waits for the device work that produced k and v, on the current stream.
        return blocks.cpu().numpy()

    def stage(self, blocks):
        if self.device is None or self.device.type != "cuda":
            return blocks
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(device=self.device)
        host = torch.from_numpy(_torchable(blocks)).pin_memory()
        with torch.cuda.device(self.device), torch.cuda.stream(self._side_stream):
            tensor = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._side_stream)
        return _Staged(tensor, event)

    def from_blocks(self, blocks, batch, count, like):
        if isinstance(blocks, _Staged):
            stream = torch.cuda.current_stream(like.device)
            stream.wait_event(blocks.event)
            x = blocks.tensor
            # Allocated on the side stream, used on this one: keep the allocator from handing
            # the memory out again before this stream is done with it.
            x.record_stream(stream)
        else:
            x = torch.from_numpy(_torchable(blocks)).to(like.device)
        if like.dtype == torch.bfloat16:
            x = x.view(torch.int16).view(torch.bfloat16)
        elif x.dtype != like.dtype:
            x = x.view(like.dtype)
        _, _, _, t, h, d = x.shape
        x = x.reshape(batch, count, 2, t, h, d)
        k = x[:, :, 0].permute(0, 3, 1, 2, 4).reshape(batch, h, count * t, d)
        v = x[:, :, 1].permute(0, 3, 1, 2, 4).reshape(batch, h, count * t, d)
        return k, v
