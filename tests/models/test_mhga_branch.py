"""The MHGA branch inside the model: dense and message-passing layers, graphs, attention."""

import pytest
import torch

from csetgraph.graph import (
    complete_token_graph,
    relation_matrix,
    to_homogeneous,
    token_graph_pair,
    token_graph_single,
)
from csetgraph.losses import CSETLoss
from csetgraph.models import CSET, CAOptions, EncoderOptions, MHGAOptions, SEOptions, TripletOptions
from csetgraph.nn import MHGAConv

TINY = dict(
    encoder=EncoderOptions(
        backbone="vit_tiny_patch16_224",
        img_size=(64, 32),
        embed_dim=32,
        depth=3,
        num_heads=2,
        drop_path_rate=0.0,
    ),
    se=SEOptions(direction="both", layers=(1,), ratio=0.25),
    triplet=TripletOptions(head_dropout=0.0),
    ca=CAOptions(enabled=True, heads=2, dropout=0.0),
)
LAYERS = ("dense", "message_passing")


def make(**mhga):
    torch.manual_seed(0)
    return CSET(5, **TINY, mhga=MHGAOptions(enabled=True, heads=2, **mhga))


def batch(b=4):
    g = torch.Generator().manual_seed(3)
    vis = torch.randn(b, 3, 64, 32, generator=g)
    ir = torch.randn(b, 3, 64, 32, generator=g)
    pids = torch.arange(b // 2).repeat_interleave(2).repeat(2)
    return vis, ir, pids


def loss_and_grads(model, vis, ir, pids):
    loss, _ = CSETLoss()(model(vis, ir), pids)
    model.zero_grad()
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize("pair_graph", [False, True])
def test_dense_and_message_passing_give_the_same_loss_and_gradients(pair_graph):
    assert LAYERS
    models = {layer: make(layer=layer, pair_graph=pair_graph).train() for layer in LAYERS}
    assert type(models["dense"].mhga.conv).__name__ == "DenseMHGAConv"
    assert type(models["message_passing"].mhga.conv).__name__ == "MHGAConv"
    # One state dict moves between the two layers: the same weights.
    models["message_passing"].load_state_dict(models["dense"].state_dict())
    vis, ir, pids = batch()
    dense_loss, dense_grads = loss_and_grads(models["dense"], vis, ir, pids)
    mp_loss, mp_grads = loss_and_grads(models["message_passing"], vis, ir, pids)
    torch.testing.assert_close(mp_loss, dense_loss, rtol=1e-5, atol=1e-6)
    assert set(mp_grads) == set(dense_grads)
    assert any(n.startswith("mhga.conv.") for n in dense_grads)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(mp_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _reference_single(conv, nodes, h, w):
    """MHGAConv per image on PyG's own HeteroData token graph, scattered to (B, H, n, n)."""
    B, n, _ = nodes.shape
    outs, atts = [], []
    for b in range(B):
        graph = to_homogeneous(token_graph_single(nodes[b], h=h, w=w, modality="vis"))
        out, (ei, alpha) = conv(graph.x, graph.edge_index, graph.edge_type, True)
        att = torch.zeros(conv.heads, n, n)
        for e in range(ei.size(1)):
            att[:, ei[1, e], ei[0, e]] = alpha[e]
        outs.append(out)
        atts.append(att)
    return torch.stack(outs), torch.stack(atts)


@pytest.mark.parametrize("layer", LAYERS)
def test_branch_attention_equals_pyg_token_graph_reference(layer):
    model = make(layer=layer).eval()
    branch = model.mhga
    h, w = branch.grid_size
    tokens = torch.randn(3, 1 + h * w, 32)
    pooled, att = branch({"vis": tokens}, return_attention_weights=True)
    assert att.shape == (3, 2, 1 + h * w, 1 + h * w)
    nodes = branch.norm("vis")(branch.block("vis")(tokens))
    ref_conv = MHGAConv(32, 16, heads=2)
    ref_conv.load_state_dict(branch.conv.state_dict())
    ref_out, ref_att = _reference_single(ref_conv, nodes, h, w)
    torch.testing.assert_close(att, ref_att, rtol=1e-5, atol=1e-6)
    ref_pooled = branch.out_norm(nodes + ref_out).mean(1)
    torch.testing.assert_close(pooled["vis"], ref_pooled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(branch({"vis": tokens})["vis"], pooled["vis"])


def test_pair_attention_covers_both_node_types_of_the_pyg_pair_graph():
    model = make(layer="message_passing").eval()
    branch = model.mhga
    h, w = branch.grid_size
    n = 1 + h * w
    x = {m: torch.randn(2, n, 32) for m in ("vis", "ir")}
    _, att = branch(x, return_attention_weights=True)  # (2, H, 2n, 2n)
    nodes = {m: branch.norm(m)(branch.block(m)(x[m])) for m in x}
    graph = to_homogeneous(token_graph_pair(nodes["vis"][1], nodes["ir"][1], h=h, w=w))
    _, (ei, alpha) = branch.conv(graph.x, graph.edge_index, graph.edge_type, True)
    ref = torch.zeros(2, 2 * n, 2 * n)
    ref[:, ei[1], ei[0]] = alpha.t()
    torch.testing.assert_close(att[1], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, 2 * n))


def test_local_graph_attends_only_along_same_and_adjacent_edges():
    model = make(graph="local").eval()
    h, w = model.mhga.grid_size
    n = 1 + h * w
    _, att = model.mhga({"ir": torch.randn(2, n, 32)}, return_attention_weights=True)
    _, edge_type = complete_token_graph(h, w, paired=False)
    distant = (edge_type == 2).view(n, n)  # [target, source]
    assert distant.any()
    assert torch.all(att[:, :, distant] == 0)
    assert torch.all(att[:, :, ~distant] > 0)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, n))


def test_graphs_are_buffers_built_once_not_in_the_state_dict(monkeypatch):
    model = make(pair_graph=True)
    h, w = model.mhga.grid_size
    assert torch.equal(model.mhga.relation_single, relation_matrix(h, w, paired=False))
    assert torch.equal(model.mhga.relation_pair, relation_matrix(h, w, paired=True))
    assert not any(k.startswith("mhga.relation") for k in model.state_dict())
    assert set(model._ddp_params_and_buffers_to_ignore) == {
        "mhga.relation_single",
        "mhga.relation_pair",
    }

    def fail(*args, **kwargs):
        raise AssertionError("the graph is rebuilt in a forward pass")

    for name in ("relation_matrix", "complete_token_graph", "local_token_graph"):
        monkeypatch.setattr(f"csetgraph.models.cset.{name}", fail)
    vis, ir, pids = batch()
    CSETLoss()(model(vis, ir), pids)[0].backward()
    model.eval()(vis, modality="vis")


def test_heatmap_hook_is_the_inference_graph():
    """The attention returned for one modality is that of the branch in model(x, modality=)."""
    model = make().eval()
    x = batch(2)[0]
    seen = []
    hook = model.mhga.conv.register_forward_hook(lambda m, inp, out: seen.append(inp))
    with torch.no_grad():
        model(x, modality="vis")
    hook.remove()
    _, branch = model.forward_features(x, "vis", return_branch=True)
    _, att = model.mhga({"vis": branch}, return_attention_weights=True)
    _, want = model.mhga.conv(*seen[0], return_attention_weights=True)
    torch.testing.assert_close(att, want)
