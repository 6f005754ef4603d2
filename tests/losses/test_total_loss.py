"""The total objective: which rows each triplet term reads, and the CA identity term."""

import torch
import torch.nn.functional as F

from csetgraph.losses import CSETLoss
from csetgraph.models.cset import CSETOutput


def loop_triplet(feat, pids, mods, margin):
    """Eq. 9 over cross-modal batch-hard triplets on L2-normalised rows, by loops."""
    feat = feat / feat.norm(dim=1, keepdim=True)
    losses = []
    for a in range(len(feat)):
        d = [((feat[a] - feat[j]) ** 2).sum() for j in range(len(feat))]
        pos = [d[j] for j in range(len(feat)) if pids[j] == pids[a] and mods[j] != mods[a]]
        neg = [d[j] for j in range(len(feat)) if pids[j] != pids[a] and mods[j] != mods[a]]
        if pos and neg:
            losses.append(torch.clamp(max(pos) - min(neg) + margin, min=0))
    return torch.stack(losses).mean()


def loop_kl(p_logits, q_logits):
    """KL(softmax(q) || softmax(p)) averaged over rows."""
    p, q = p_logits.softmax(1), q_logits.softmax(1)
    return (q * (q.log() - p.log())).sum(1).mean()


def output(B=4, classes=3, with_heads=True, with_image=True, with_ca=True):
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    modality = torch.arange(2).repeat_interleave(B)
    return CSETOutput(
        feat=rand(2 * B, 6),
        logits=rand(2 * B, classes),
        retrieval_feat=rand(2 * B, 6),
        modality=modality,
        triplet_feat=rand(2 * B, 6) if with_image else None,
        head_feat=rand(4 * B, 5) if with_heads else None,
        head_modality=modality.repeat(2) if with_heads else None,
        head_rows=torch.arange(2 * B).repeat(2) if with_heads else None,
        ca_logits=rand(2 * B, classes) if with_ca else None,
    )


def test_image_and_head_terms_add_and_ca_gets_its_own_identity_loss():
    out = output()
    pids = torch.tensor([0, 0, 1, 2] * 2)
    beta, gamma, delta, m = 0.7, 0.5, 0.25, 0.3
    loss = CSETLoss(triplet_weight=beta, margin=m, distill_weight=gamma, ca_identity_weight=delta)
    total, terms = loss(out, pids)
    tri = loop_triplet(out.triplet_feat, pids, out.modality, m)
    heads = loop_triplet(out.head_feat, pids[out.head_rows], out.head_modality, m)
    ce = F.cross_entropy(out.logits, pids)
    cd = 0.5 * (loop_kl(out.ca_logits, out.logits) + loop_kl(out.logits, out.ca_logits))
    ca_ce = F.cross_entropy(out.ca_logits, pids)
    torch.testing.assert_close(terms["tri"], tri)
    torch.testing.assert_close(terms["tri_heads"], heads)
    torch.testing.assert_close(terms["cd"], cd)
    torch.testing.assert_close(terms["ca_ce"], ca_ce)
    torch.testing.assert_close(total, ce + beta * (tri + heads) + gamma * cd + delta * ca_ce)


def test_heads_alone_are_logged_as_tri_and_no_ca_identity_term_by_default():
    out = output(with_image=False)
    pids = torch.tensor([0, 0, 1, 2] * 2)
    _, terms = CSETLoss()(out, pids)
    heads = loop_triplet(out.head_feat, pids[out.head_rows], out.head_modality, 0.3)
    assert set(terms) == {"ce", "tri", "cd", "total"}
    torch.testing.assert_close(terms["tri"], heads)


def test_one_way_distillation_teaches_the_ca_logits_and_leaves_the_clean_ones():
    """``distill_mutual=False``: the term is KL(clean || CA) alone, and its gradient reaches
    the CA logits only (the clean logits' gradient is the cross-entropy's alone)."""
    out = output()
    out.logits.requires_grad_(True)
    out.ca_logits.requires_grad_(True)
    pids = torch.tensor([0, 0, 1, 2] * 2)
    loss = CSETLoss(distill_weight=1.0, ca_identity_weight=0.0, distill_mutual=False)
    total, terms = loss(out, pids)
    torch.testing.assert_close(terms["cd"], loop_kl(out.ca_logits, out.logits).detach())
    total.backward()
    logits = out.logits.detach().requires_grad_(True)
    F.cross_entropy(logits, pids).backward()
    torch.testing.assert_close(out.logits.grad, logits.grad)
    ca = out.ca_logits.detach().requires_grad_(True)
    loop_kl(ca, out.logits.detach()).backward()
    torch.testing.assert_close(out.ca_logits.grad, ca.grad)


def test_head_logits_get_their_own_identity_loss_with_each_row_labelled_by_its_image():
    """``head_ce``: the ``W'`` rows (clean vis, clean ir, mixed vis, mixed ir) take the pid of
    the image they come from; the reference labels each row by hand, then one CE per row."""
    out = output(with_ca=False)
    B, classes = 4, 3
    g = torch.Generator().manual_seed(1)
    out.head_logits = torch.randn(4 * B, classes, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 2] * 2)
    eps = 0.4
    total, terms = CSETLoss(head_identity_weight=eps)(out, pids)
    labels = [pids[r % (2 * B)] for r in range(4 * B)]  # row r is image r mod 2B
    rows = [-out.head_logits[r].log_softmax(0)[labels[r]] for r in range(4 * B)]  # one CE per row
    head_ce = torch.stack(rows).mean()
    torch.testing.assert_close(terms["head_ce"], head_ce)
    rest = terms["ce"] + 0.7 * (terms["tri"] + terms["tri_heads"])
    torch.testing.assert_close(total, rest + eps * head_ce)
    _, no_weight = CSETLoss(head_identity_weight=0.0)(out, pids)
    assert "head_ce" not in no_weight
