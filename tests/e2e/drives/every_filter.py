"""Runs inside GIMP: every filter of the operation table, driven generically.  PARAMS["runs"] lists
{op, proc, model} (from the table and the backend's models: tests/e2e/test_gimp_every_filter.py);
each is run on three kinds of layers.  PARAMS["procs"] are the procedures whose registration is
recorded.  Nothing here names an operation: a new table row is covered without new GIMP code."""
from drive_lib import *  # noqa: F403

LAYERS = {
    # name: (image base, precision, format of the layer below, of the source, to read back, alpha)
    "rgb_u8": ("RGB", "u8", "R'G'B' u8", "R'G'B' u8", "R'G'B'A u8", False),
    "rgb_u8_feathered": ("RGB", "u8", "R'G'B' u8", "R'G'B' u8", "R'G'B'A u8", False),
    "gray_u16_alpha": ("GRAY", "u16", "Y' u16", "Y'A u16", "Y'A u16", True),
}
W, H = 40, 32


@case
def registered():
    return {proc: proc_info(proc) for proc in PARAMS["procs"]}


def _bytes_per(fmt):
    comps = {"R'G'B'A": 4, "R'G'B'": 3, "Y'A": 2, "Y'": 1}[fmt.split()[0]]
    return comps * (2 if fmt.endswith("u16") else 1)


def _one(run, kind):
    base, precision, bfmt, wfmt, rfmt, alpha = LAYERS[kind]
    img = new_image(W, H, base=base, precision=precision)
    add_layer(img, "below", W, H, base=base, fmt=bfmt, data=pattern(W * H * _bytes_per(bfmt), 1))
    layer = add_layer(img, "src", W, H, base=base, alpha=alpha, fmt=wfmt,
                      data=pattern(W * H * _bytes_per(wfmt), 2))
    if kind.endswith("feathered"):
        select_rect(img, 10, 8, 16, 12, feather=6.0)
    elif run.get("select"):             # an operation whose input is the selection (Inpaint)
        select_rect(img, 12, 10, 14, 6)
    before = describe(img)
    src_before = dump_pixels(layer, rfmt)
    r = run_proc(run["proc"], img, [layer], **run.get("props", {}))
    out = {"run": r, "before": before, "after": describe(img), "src_id": layer.get_id(),
           "src_before": src_before, "src_after": dump_pixels(layer, rfmt), "fmt": rfmt,
           "channels": [c.get_name() for c in img.get_channels()],
           "selection_bounds": selection_bounds(img)}
    if r.get("layer_id") and not Gimp.Item.get_by_id(r["layer_id"]).is_group_layer():
        new = Gimp.Layer.get_by_id(r["layer_id"])
        out["pixels"] = dump_pixels(new, rfmt)
        out["mask"] = dump_pixels(new.get_mask(), "Y u8")
        x, y = offsets(new)
        out["selection_under_layer"] = dump_selection(img, (x, y, new.get_width(), new.get_height()))
    return out


def _make(run, kind):
    def fn():
        return _one(run, kind)
    fn.__name__ = f"{run['op']}__{kind}"
    return fn


for _run in PARAMS["runs"]:
    for _kind in LAYERS:
        case(_make(_run, _kind))

finish()
