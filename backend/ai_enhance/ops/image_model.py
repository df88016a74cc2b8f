"""Running one image model over the job's region: shared by every operation whose work is "this
model, tiled" (upscale, denoise, sharpen, JPEG cleanup, a face job's background)."""
from __future__ import annotations

from ai_enhance_client.protocol import ErrorKind

from ..errors import EnhanceError
from ..jobs import JobOutput
from ..models import LoadedModel, ModelInfo, ModelStore
from .context import OpContext


def check_serves(info: ModelInfo, op: str, store: ModelStore) -> None:
    """UNSUPPORTED naming the installed models that do ``op`` when ``info`` does not."""
    if op in info.ops:
        return
    users = [m.id for m in store.list() if op in m.ops and m.selectable and m.installed][:6]
    raise EnhanceError(ErrorKind.UNSUPPORTED,
                       f"model '{info.id}' does not do '{op}' (it does: {', '.join(info.ops) or 'nothing'})",
                       f"for '{op}' choose one of: {', '.join(users) or 'no installed model'}")


def load(ctx: OpContext, info: ModelInfo, options: dict | None = None) -> LoadedModel:
    ctx.progress(0.0, f"loading {info.name}")
    ctx.check_cancel()
    return ctx.models.get_model(info, ctx.options if options is None else options)


def run_model(ctx: OpContext, info: ModelInfo | None = None, *, scale: int | None = None,
              options: dict | None = None, on_info=None) -> JobOutput:
    """``info`` (default: the job's model) over the job's roi at ``scale`` (default: the job's)."""
    info = info or ctx.model
    options = ctx.options if options is None else options
    lm = load(ctx, info, options)
    scale = ctx.scale if scale is None else scale
    res = ctx.models.run_tiled(lm, ctx.image, ctx.roi, scale, ctx.req.tile, options, ctx.progress,
                               ctx.is_cancelled, on_info)
    return JobOutput(res.image, info={
        "model": info.id, "model_name": info.name, "model_status": info.status, "arch": lm.arch,
        "scale": scale, "model_scale": lm.scale, "tile": res.tile, "tiles": res.tiles,
        "device": lm.device, "dtype": lm.dtype, "seconds": round(res.seconds, 3), "roi": list(ctx.roi)})
