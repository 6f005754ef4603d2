import pytest
import timm
import torch
import torch.nn.functional as F

from csetgraph.losses import CSETLoss
from csetgraph.models import (
    CSET,
    CAOptions,
    EncoderOptions,
    MHGAOptions,
    OptionError,
    SEOptions,
    TripletOptions,
)

TINY = EncoderOptions(
    backbone="vit_tiny_patch16_224",
    img_size=(64, 32),
    embed_dim=32,
    depth=4,
    num_heads=2,
    drop_path_rate=0.0,
)
C, CLASSES = 32, 5
SE = SEOptions(direction="both", layers=(1, 2), ratio=0.25)
FULL = dict(se=SE, ca=CAOptions(enabled=True, heads=2), mhga=MHGAOptions(enabled=True, heads=2))
MHGA = MHGAOptions(enabled=True, heads=2)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def make(**kw):
    torch.manual_seed(0)
    return CSET(CLASSES, encoder=TINY, **kw)


def pair(b=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, 64, 32, generator=g), torch.randn(b, 3, 64, 32, generator=g)


def test_all_switches_off_is_the_two_stream_vit_baseline():
    model = make().eval()
    vis, ir = pair()
    # Reference: plain timm ViTs with the same weights, class token, BatchNorm, classifier.
    refs = {}
    for m, enc in (("vis", model.vis_encoder), ("ir", model.ir_encoder)):
        vit = timm.create_model(
            "vit_tiny_patch16_224",
            img_size=(64, 32),
            embed_dim=32,
            depth=4,
            num_heads=2,
            num_classes=0,
        )
        vit.load_state_dict(enc.vit.state_dict())
        refs[m] = vit.eval()
    feat = torch.cat(
        [refs["vis"].forward_features(vis)[:, 0], refs["ir"].forward_features(ir)[:, 0]]
    )
    bn = model.neck.bn
    bn_feat = (feat - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    out = model(vis, ir)
    torch.testing.assert_close(out.feat, feat)
    torch.testing.assert_close(out.logits, bn_feat @ model.neck.classifier.weight.T)
    torch.testing.assert_close(out.triplet_feat, feat)  # no heads: eq. 9 reads the neck input
    torch.testing.assert_close(out.retrieval_feat, bn_feat)
    assert out.head_feat is None and out.ca_logits is None and out.se_info == []
    torch.testing.assert_close(model.embed(ir, "ir"), F.normalize(bn_feat[4:], dim=1))
    # timm's names: tokens from forward_features, the embedding from model(x, modality=...)
    torch.testing.assert_close(
        model.forward_features(vis, "vis"), refs["vis"].forward_features(vis)
    )
    torch.testing.assert_close(model(ir, modality="ir"), F.normalize(bn_feat[4:], dim=1))
    assert {k.split(".")[0] for k in model.state_dict()} == {"vis_encoder", "ir_encoder", "neck"}


def test_each_switch_adds_exactly_its_parameters():
    base = n_params(make())
    head = C * C + C  # Linear(C, C) of one feed-forward head
    one = SEOptions(direction="both", layers=(1,), ratio=0.25)
    se = n_params(make(se=one))
    assert se - base == 2 * head  # W' for each modality; SE itself has no parameters
    ca = n_params(make(se=one, ca=CAOptions(enabled=True, heads=2)))
    mha = 4 * C * C + 4 * C  # in-projection (q, k, v) and out-projection with biases
    ca_neck = 2 * C + C * CLASSES  # BatchNorm affine + bias-free classifier
    assert ca - se == 2 * head + mha + 2 * C + ca_neck
    mhga = n_params(make(mhga=MHGA))
    block = n_params(make().vis_encoder.blocks[-1])
    conv = C * C + 2 * C + C  # lin (no bias), att_src + att_dst (heads x C/heads each), bias
    neck_growth = 2 * C + C * CLASSES  # the neck input doubles: C more BatchNorm and weights
    assert mhga - base == 2 * block + 2 * (2 * C) + conv + 2 * C + neck_growth
    learn = n_params(make(mhga=MHGAOptions(enabled=True, heads=2, learn_strengths=True)))
    assert learn - mhga == 3


def test_mixed_stream_differs_from_clean_exactly_at_exchanged_tokens():
    model = make(**FULL).eval()
    vis, ir = pair()
    out = model(vis, ir, return_streams=True)
    streams, info = out.streams, out.se_info[0]
    assert streams[0]["mixed"] is None  # nothing mixed before the first SE layer
    clean, mixed = streams[1]["clean"], streams[1]["mixed"]
    B, N, _ = clean["vis"].shape
    for m, direction in (("ir", "i2v"), ("vis", "v2i")):
        receivers = info[direction].edge_index[1]
        changed = torch.zeros(B * N, dtype=torch.bool)
        changed[receivers] = True
        differs = (mixed[m] != clean[m]).any(-1).reshape(-1)
        assert torch.equal(differs, changed)
        # the exchanged tokens hold exactly the senders' clean features
        other = "vis" if m == "ir" else "ir"
        torch.testing.assert_close(
            mixed[m].reshape(B * N, -1)[receivers],
            clean[other].reshape(B * N, -1)[info[direction].edge_index[0]],
        )
        assert not bool((receivers % N == 0).any())  # class tokens never exchanged
    # SE layer 1 only feeds block 2 of the mixed stream; the clean stream is untouched by it
    ref = make(mhga=FULL["mhga"])
    ref.load_state_dict(model.state_dict(), strict=False)
    ref.eval()
    torch.testing.assert_close(ref(vis, ir).feat, out.feat)


def test_embedding_does_not_depend_on_the_batch():
    model = make(**FULL).eval()
    x = pair(6)[0]
    full = model.embed(x, "vis")
    assert full.shape == (6, 2 * C)
    torch.testing.assert_close(full.norm(dim=1), torch.ones(6))
    for i in range(6):
        torch.testing.assert_close(
            model.embed(x[i : i + 1], "vis"), full[i : i + 1], atol=1e-5, rtol=1e-4
        )


def test_a_few_steps_lower_every_loss_term():
    no_dropout = dict(
        ca=CAOptions(enabled=True, heads=2, dropout=0.0), triplet=TripletOptions(head_dropout=0.0)
    )
    model = make(**{**FULL, **no_dropout})
    # Both classifiers start near-uniform, so the distillation term starts near zero; give the
    # CA classifier a random opinion so that there is a disagreement for training to remove.
    with torch.no_grad():
        model.ca_neck.classifier.weight.normal_(0, 0.5)
    vis, ir = pair(8)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3] * 2)
    criterion = CSETLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(25):
        loss, terms = criterion(model(vis, ir), pids)
        history.append({k: float(v) for k, v in terms.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, last = history[0], history[-1]
    assert set(first) == {"ce", "tri", "cd", "total"}
    for key in ("ce", "tri", "cd", "total"):
        assert last[key] < first[key], key


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: SEOptions(direction="both"), "se.layers is empty"),
        (lambda: make(se=SEOptions(direction="both", layers=(3,))), r"out of range.*0\.\.2"),
        (lambda: SEOptions(direction="sideways", layers=(1,)), "se.direction must be one of"),
        (lambda: SEOptions(similarity="euclid"), "se.similarity must be one of"),
        (lambda: make(ca=CAOptions(enabled=True)), "ca.enabled needs the mixed stream"),
        (lambda: make(mhga=MHGAOptions(enabled=True, heads=3)), "mhga.heads=3 must divide"),
        (lambda: MHGAOptions(enabled=True, layer="sparse"), "mhga.layer must be one of"),
        (lambda: MHGAOptions(enabled=True, graph="knn"), "mhga.graph must be one of"),
        (lambda: TripletOptions(feature="bn"), "triplet.feature must be one of"),
        (lambda: TripletOptions(head_dropout=1.0), r"triplet.head_dropout must lie in \[0, 1\)"),
        (lambda: TripletOptions(head_form="skip"), "triplet.head_form must be one of"),
        (lambda: TripletOptions(head_norm="layer"), "triplet.head_norm must be one of"),
    ],
)
def test_bad_options_are_errors_that_name_the_argument(build, pattern):
    with pytest.raises(OptionError, match=pattern) as err:
        build()
    assert str(err.value).startswith(err.value.argument)


def test_local_graph_uses_the_sparse_layer_and_runs():
    model = make(mhga=MHGAOptions(enabled=True, heads=2, graph="local")).eval()
    dense = make(mhga=MHGA).eval()
    assert type(model.mhga.conv).__name__ == "MHGAConv"
    assert type(dense.mhga.conv).__name__ == "DenseMHGAConv"
    out = model(*pair())
    assert out.feat.shape == (8, 2 * C)


@pytest.mark.parametrize("pair_graph", [False, True])
def test_pair_graph_decides_whether_an_image_sees_its_partner(pair_graph):
    model = make(mhga=MHGAOptions(enabled=True, heads=2, pair_graph=pair_graph)).eval()
    vis, ir = pair()
    feat = model(vis, ir).feat[:4]  # the visible rows
    other = model(vis, torch.randn_like(ir)).feat[:4]
    assert torch.equal(feat, other) is not pair_graph
    if not pair_graph:  # training features equal the inference features
        tokens, branch = model.forward_features(vis, "vis", return_branch=True)
        torch.testing.assert_close(feat, model.forward_head(tokens, "vis", branch, pre_logits=True))


def test_call_forms_are_checked():
    model = make(mhga=MHGA).eval()
    vis, ir = pair()
    with pytest.raises(ValueError, match="needs modality="):
        model(vis)
    with pytest.raises(ValueError, match="either model"):
        model(vis, ir, modality="vis")
    tokens = model.forward_features(vis, "vis")
    assert tokens.shape == (4, 1 + 4 * 2, C)
    with pytest.raises(ValueError, match="pass branch="):
        model.forward_head(tokens, "vis")
    with pytest.raises(ValueError, match="modality must be one of"):
        model(vis, modality="rgb")


def test_retrieval_reading_trains_the_embedding_that_retrieval_uses():
    model = make(triplet=TripletOptions(feature="retrieval")).eval()
    vis, ir = pair()
    out = model(vis, ir)
    torch.testing.assert_close(out.triplet_feat, out.retrieval_feat)
    # the loss normalises these rows: they are then exactly the retrieval embeddings
    torch.testing.assert_close(F.normalize(out.triplet_feat[4:], dim=1), model.embed(ir, "ir"))


@pytest.mark.parametrize("heads", ["replace", "add"])
def test_with_se_the_head_rows_replace_or_join_the_image_rows(heads):
    model = make(se=SE, triplet=TripletOptions(heads=heads)).eval()
    vis, ir = pair()
    out = model(vis, ir)
    assert out.head_feat.shape == (16, C)
    assert torch.equal(out.head_rows, torch.arange(8).repeat(2))
    assert torch.equal(out.head_modality, torch.tensor([0] * 4 + [1] * 4).repeat(2))
    if heads == "replace":
        assert out.triplet_feat is None
    else:
        torch.testing.assert_close(out.triplet_feat, out.feat)
    # the clean rows are W' of the final-normed class tokens
    tokens = model.forward_features(vis, "vis")
    torch.testing.assert_close(out.head_feat[:4], model.tri_heads["vis"](tokens[:, 0]))


@pytest.mark.parametrize("form", ["plain", "residual", "identity"])
def test_w_prime_heads_by_hand(form):
    """W' rows against Linear and the exact GELU written out, the class token added back for
    the residual form, the class token alone for the identity form."""
    model = make(se=SE, triplet=TripletOptions(head_dropout=0.0, head_form=form)).eval()
    vis, ir = pair()
    out = model(vis, ir)
    for i, m in enumerate(("vis", "ir")):
        cls = model.forward_features((vis, ir)[i], m)[:, 0]  # (B, C), final-normed, clean
        head = model.tri_heads[m]
        if form == "identity":
            torch.testing.assert_close(out.head_feat[4 * i : 4 * i + 4], cls)
            continue
        linear = head.head[0] if form == "residual" else head[0]
        z = cls @ linear.weight.T + linear.bias
        ref = 0.5 * z * (1 + torch.erf(z / 2**0.5))
        if form == "residual":
            ref = ref + cls
        torch.testing.assert_close(out.head_feat[4 * i : 4 * i + 4], ref)


def test_w_prime_batch_norm_by_hand():
    """``head_norm="batch"``: in training each call of a head (one modality, one stream) is
    standardised per dimension with the batch's own mean and biased variance, no affine."""
    triplet = TripletOptions(head_dropout=0.0, head_form="residual", head_norm="batch")
    model = make(se=SE, triplet=triplet).train()
    vis, ir = pair()
    out = model(vis, ir, return_streams=True)
    last = out.streams[max(out.streams)]  # the tokens after the last block
    for s, stream in enumerate((last["clean"], last["mixed"])):
        for i, m in enumerate(("vis", "ir")):
            cls = model.encoder(m).norm(stream[m])[:, 0]  # (B, C)
            linear = model.tri_heads[m][0].head[0]
            z = cls @ linear.weight.T + linear.bias
            y = cls + 0.5 * z * (1 + torch.erf(z / 2**0.5))
            mean = y.mean(0)
            var = ((y - mean) ** 2).mean(0)
            ref = (y - mean) / torch.sqrt(var + 1e-5)
            rows = out.head_feat[8 * s + 4 * i : 8 * s + 4 * i + 4]
            torch.testing.assert_close(rows, ref, rtol=1e-4, atol=1e-4)


def test_w_prime_identity_logits_by_hand():
    """``head_identity``: one BNNeck over the ``4B`` W' rows, in eval mode its BatchNorm is
    the running statistics' affine map, then the bias-free classifier; it adds exactly that
    neck's parameters, and without the switch there are no such logits."""
    triplet = TripletOptions(head_dropout=0.0, head_form="residual")
    plain = make(se=SE, triplet=triplet)
    model = make(se=SE, triplet=TripletOptions(**{**vars(triplet), "head_identity": True}))
    assert n_params(model) - n_params(plain) == 2 * C + C * CLASSES
    model.eval()
    with torch.no_grad():
        model.head_neck.bn.running_mean.uniform_(-1, 1)
        model.head_neck.bn.running_var.uniform_(0.5, 2)
    out = model(*pair())
    bn = model.head_neck.bn
    x = (out.head_feat - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    ref = (x * bn.weight + bn.bias) @ model.head_neck.classifier.weight.T
    assert out.head_logits.shape == (16, CLASSES)
    torch.testing.assert_close(out.head_logits, ref)
    assert plain.eval()(*pair()).head_logits is None


def test_head_dropout_is_its_own_switch():
    vis, ir = pair()
    for dropout, same in ((0.0, True), (0.5, False)):
        model = make(se=SE, triplet=TripletOptions(head_dropout=dropout)).train()
        torch.manual_seed(0)
        first = model(vis, ir).head_feat
        second = model(vis, ir).head_feat
        assert torch.equal(first, second) is same


def test_config_errors_name_the_config_key():
    from csetgraph.config import load_config
    from csetgraph.errors import ConfigError
    from csetgraph.models import build_model

    cfg = load_config(None, ["model.embed_dim=32", "model.depth=4", "model.num_heads=2"])
    cfg.model.pretrained = ""
    cfg.model.triplet.feature = "bn"
    with pytest.raises(ConfigError, match=r"^model\.triplet\.feature must be one of"):
        build_model(cfg.model, 5, (128, 64))
    cfg.model.triplet.feature = "retrieval"
    cfg.model.share_encoders = True
    with pytest.raises(ConfigError, match=r"^model\.share_encoders must be False"):
        build_model(cfg.model, 5, (128, 64))
