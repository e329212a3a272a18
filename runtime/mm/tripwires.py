"""Checks and token bookkeeping right before a multimodal forward.

A mismatch between image tokens in `input_ids` and the features the vision tower produces otherwise
surfaces as an opaque device-side assert inside `masked_scatter` (or a shape error deep in the model);
`check_image_tokens` names the token id, both counts and every shape instead.
"""

from __future__ import annotations

import torch

TEXT, IMAGE, VIDEO = 0, 1, 2


def mm_token_type_ids(
    input_ids: torch.Tensor, image_token_id: int, video_token_id: int | None = None
) -> torch.Tensor:
    """Per-token modality (0 text, 1 image, 2 video) in the shape of `input_ids`.

    transformers 5.x Qwen-VL models need it whenever image grids are passed, to build 3D positions.
    """
    types = torch.zeros_like(input_ids, dtype=torch.int32)
    types[input_ids == image_token_id] = IMAGE
    if video_token_id is not None:
        types[input_ids == video_token_id] = VIDEO
    return types


def check_image_tokens(
    input_ids: torch.Tensor,
    image_token_id: int,
    pixel_values: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    merge_size: int,
) -> int:
    """Raise ValueError unless image tokens, image features and pixel rows agree; return the token count."""
    tokens = int((input_ids == image_token_id).sum())
    patches = int(image_grid_thw.prod(-1).sum()) if image_grid_thw is not None else 0
    features = (
        int((image_grid_thw.prod(-1) // (merge_size * merge_size)).sum()) if image_grid_thw is not None else 0
    )
    rows = int(pixel_values.shape[0]) if pixel_values is not None else 0
    shapes = (
        f"input_ids_shape={list(input_ids.shape)}, "
        f"pixel_values_shape={list(pixel_values.shape) if pixel_values is not None else None}, "
        f"image_grid_thw_shape={list(image_grid_thw.shape) if image_grid_thw is not None else None}"
    )
    if rows != patches:
        raise ValueError(
            f"image pixel/grid mismatch: pixel_values has {rows} rows but image_grid_thw describes "
            f"{patches} patches ({shapes})"
        )
    if tokens != features:
        raise ValueError(
            f"image token/feature mismatch before the forward: image_token_id={image_token_id}, "
            f"image_tokens={tokens}, image_features={features} (merge_size={merge_size}), {shapes}"
        )
    return tokens


def image_rows(
    input_ids: torch.Tensor, image_token_id: int, image_grid_thw: torch.Tensor, merge_size: int
) -> list[int]:
    """The row of a [rows, seq_len] batch that each image slot lies in, in slot order.

    Images are consumed row by row in order, as the model does, so a dropped slot (policy "drop") maps to
    the sample whose loss must be zeroed. Raises ValueError when an image would straddle two rows.
    """
    per_row = (input_ids.reshape(input_ids.shape[0], -1) == image_token_id).sum(-1).tolist()
    sizes = (image_grid_thw.prod(-1) // (merge_size * merge_size)).tolist()
    rows: list[int] = []
    row, left = 0, per_row[0] if per_row else 0
    for slot, size in enumerate(sizes):
        while left == 0 and row + 1 < len(per_row):
            row += 1
            left = per_row[row]
        if size > left:
            raise ValueError(
                f"image slot {slot} needs {size} image tokens but row {row} has only {left} left "
                f"(image_token_id={image_token_id}, tokens per row {per_row}, tokens per image {sizes})"
            )
        rows.append(row)
        left -= size
    return rows
