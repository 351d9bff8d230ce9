"""TextFeatures / VideoFeatures (src/xclip_pl/model/features.py): every operation against the same manual
tensor operation applied field by field."""
import pytest
import torch

from xclip_pl.model.features import TextFeatures, VideoFeatures

FIELDS = {TextFeatures: ("sentence_emb", "word_emb", "word_mask"), VideoFeatures: ("video_emb", "frame_emb", "frame_mask")}


def make(cls, n: int, length: int = 5, dim: int = 4, seed: int = 0):
    """Random features of n items; the mask has a different number of True slots per item."""
    g = torch.Generator().manual_seed(seed)
    pooled = torch.randn(n, dim, generator=g)
    per_slot = torch.randn(n, length, dim, generator=g)
    mask = torch.arange(length)[None, :] < (torch.arange(n)[:, None] % length + 1)
    return cls(pooled, per_slot, mask)


def tensors(feat):
    return [getattr(feat, name) for name in FIELDS[type(feat)]]


@pytest.fixture(params=[TextFeatures, VideoFeatures], ids=["text", "video"])
def cls(request):
    return request.param


def test_fields_are_the_documented_ones(cls):
    # The container is built positionally elsewhere (EvalBuffer.gathered, cat): the field order matters.
    feat = make(cls, 3)
    assert list(vars(feat)) == list(FIELDS[cls])


@pytest.mark.parametrize("n", [0, 1, 4])
def test_len_is_the_number_of_items(cls, n):
    assert len(make(cls, n)) == n


@pytest.mark.parametrize(
    "idx",
    [slice(1, 3), slice(None, None, 2), torch.tensor([3, 0, 0, 2]),
     torch.tensor([True, False, True, True]), 2],
    ids=["slice", "step", "long-with-repeat", "bool-mask", "int"],
)
def test_getitem_indexes_every_field_the_same_way(cls, idx):
    feat = make(cls, 4)
    out = feat[idx]
    assert type(out) is cls
    for got, src in zip(tensors(out), tensors(feat)):
        assert torch.equal(got, src[idx])
        assert got.dtype == src.dtype
    if not isinstance(idx, int):
        assert len(out) == len(tensors(feat)[0][idx])


def test_cat_concatenates_every_field_in_order(cls):
    parts = [make(cls, 2, seed=1), make(cls, 3, seed=2), make(cls, 1, seed=3)]
    out = cls.cat(parts)
    assert type(out) is cls and len(out) == 6
    for k, got in enumerate(tensors(out)):
        expected = torch.cat([tensors(p)[k] for p in parts], dim=0)
        assert torch.equal(got, expected)
    # Element-wise: item 3 of the result is item 1 of the second part.
    for got, src in zip(tensors(out[3]), tensors(parts[1][1])):
        assert torch.equal(got, src)


def test_cat_of_one_item_is_a_copy_of_it(cls):
    feat = make(cls, 3)
    for got, src in zip(tensors(cls.cat([feat])), tensors(feat)):
        assert torch.equal(got, src)


@pytest.mark.parametrize("call", [
    lambda f: f.to(torch.float16),
    lambda f: f.to(dtype=torch.float16),
    lambda f: f.to("cpu", torch.float16),
    lambda f: f.to(device="cpu", dtype=torch.float16),
], ids=["positional-dtype", "keyword-dtype", "device-and-dtype", "keywords"])
def test_to_dtype_changes_floating_fields_only(cls, call):
    feat = make(cls, 3)
    out = call(feat)
    assert type(out) is cls
    pooled, per_slot, mask = tensors(out)
    assert pooled.dtype == torch.float16 and per_slot.dtype == torch.float16
    assert torch.equal(pooled, tensors(feat)[0].half())
    assert torch.equal(per_slot, tensors(feat)[1].half())
    assert mask.dtype == torch.bool  # a mask cast to half would no longer index
    assert torch.equal(mask, tensors(feat)[2])
    # The source is not modified.
    assert tensors(feat)[0].dtype == torch.float32


@pytest.mark.parametrize("call", [
    lambda f: f.to("meta"),
    lambda f: f.to(torch.device("meta")),
    lambda f: f.to(device="meta"),
    lambda f: f.to("meta", torch.float64),
], ids=["str", "device", "keyword", "device-and-dtype"])
def test_to_device_moves_every_field_including_the_mask(cls, call):
    out = call(make(cls, 3))
    for t in tensors(out):
        assert t.device.type == "meta"
    assert tensors(out)[2].dtype == torch.bool
    assert tensors(out)[2].shape == (3, 5)


def test_to_without_device_keeps_the_mask_where_it_is(cls):
    feat = make(cls, 2)
    out = feat.to(torch.float64)
    assert tensors(out)[2].dtype == torch.bool and torch.equal(tensors(out)[2], tensors(feat)[2])
    assert tensors(out)[2].device == tensors(feat)[2].device
    assert tensors(out)[0].dtype == torch.float64
