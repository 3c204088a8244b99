"""Binary layers, binarizers, the online neuron and trace routing."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, surrogate
from torch import nn

from bsnn.nn import (
    BinaryConv2d,
    BinaryLinear,
    BinaryParameter,
    LatentBinaryConv2d,
    OnlineLIFNode,
    TraceRouted,
    binary_parameters,
    latent_binary_parameters,
    real_parameters,
    sign_ste,
)
from conftest import assert_binary


class Custom(nn.Module):                          # any module holding a tagged parameter counts
    def __init__(self):
        super().__init__()
        self.w = BinaryParameter(torch.ones(5))
        self.b = nn.Parameter(torch.zeros(5))


def test_binary_layers_hold_exact_signs_and_are_found_by_tag():
    conv, lin = BinaryConv2d(3, 8, 3, padding=1), BinaryLinear(10, 4)
    assert_binary(conv.weight)
    assert_binary(lin.weight)
    assert conv.weight.kind == "binary"
    model = nn.Sequential(conv, lin, Custom(), LatentBinaryConv2d(2, 2, 3), nn.Linear(2, 2))
    assert [p.numel() for p in binary_parameters(model)] == [216, 40, 5]
    assert [p.numel() for p in latent_binary_parameters(model)] == [36]
    assert sum(p.numel() for p in real_parameters(model)) == 5 + 6
    for clone in (copy.deepcopy(model), _pickled(model)):
        assert sum(p.numel() for p in binary_parameters(clone)) == 261


def _pickled(model):
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_sign_init_maps_zero_to_plus_one():
    lin = BinaryLinear(4, 4)
    with torch.no_grad():
        lin.weight.zero_()
    lin.reset_parameters()
    assert_binary(lin.weight)
    from bsnn.nn import sign_
    assert sign_(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]


def test_sign_ste_forward_and_clipped_gradient():
    w = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    y = sign_ste(w)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    y.backward(torch.arange(1.0, 8.0))
    assert w.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]        # passes where |w| <= 1


def test_online_lif_dynamics_soft_reset_and_reset_net():
    node = OnlineLIFNode(tau=2.0, v_threshold=1.0, trace="ottt", emit_trace=False)
    node.eval()
    xs = [torch.tensor([0.8, 1.5, 0.0]), torch.tensor([0.8, 1.5, 0.0]), torch.tensor([0.0, 0.0, 0.0])]
    spikes = [node(x).tolist() for x in xs]
    # v: [0.8, 1.5->0.5 after spike] -> [0.4+0.8=1.2 spike -> 0.2, 0.25+1.5=1.75 spike -> 0.75]
    assert spikes == [[0, 1, 0], [1, 1, 0], [0, 0, 0]]
    assert torch.allclose(node.v, torch.tensor([0.1, 0.375, 0.0]))
    model = nn.Sequential(nn.Identity(), node)
    functional.reset_net(model)
    assert node.v == 0.0 and node.trace is None


def test_online_lif_traces():
    x = torch.tensor([[1.2], [0.3], [1.0], [0.0]])   # one neuron, four steps
    ottt = OnlineLIFNode(trace="ottt")
    ndot = OnlineLIFNode(trace="ndot")
    code = OnlineLIFNode(trace="ndot_code")
    for n in (ottt, ndot, code):
        n.train()
        for t in range(4):
            out = n(x[t:t + 1])
            assert out.shape == (2, 1)                  # [spike, trace] along the batch axis
    # v_post: 0.2 (s=1), 0.4 (s=0), 0.2 (s=1), 0.1 (s=0); s = 1, 0, 1, 0
    # OTTT: a = 1, 0.5, 1.25, 0.625
    assert ottt.trace.item() == pytest.approx(0.625)
    # NDOT: mu = v[t]/v[t-1] clamped to [-0.5, 0.5]: 2 -> 0.5, 0.5, 0.5 ; a = 1, 0.5, 1.25, 0.625
    assert ndot.trace.item() == pytest.approx(0.625)
    # code form: mu = (v[t]-s[t])/(v[t-1]-s[t-1]): (0.4-0)/(0.2-1)=-0.5; (0.2-1)/(0.4-0)=-2 -> -0.5;
    # (0.1-0)/(0.2-1)=-0.125 ; a = 1, -0.5, 1.25, -0.15625
    assert code.trace.item() == pytest.approx(-0.15625)


def test_online_lif_gradient_stays_within_the_time_step():
    node = OnlineLIFNode(surrogate_function=surrogate.Sigmoid(alpha=4.0), emit_trace=False)
    node.train()
    x0 = torch.tensor([0.9], requires_grad=True)
    x1 = torch.tensor([0.9], requires_grad=True)
    node(x0)
    s1 = node(x1)
    s1.sum().backward()
    assert x0.grad is None                              # membrane detached: no temporal path
    h = 0.9 * 0.5 + 0.9
    sg = torch.sigmoid(torch.tensor(4.0 * (h - 1.0)))
    assert x1.grad.item() == pytest.approx((4 * sg * (1 - sg)).item(), rel=1e-5)


def _replace(z, value):
    """OTTT's ``Replace``: forward ``value``, backward into ``z``."""
    return z + (value - z).detach()


def _two_pass(op, spike, trace):
    """The reference (OTTT / SpikingJelly GradwithTrace) form: value from spikes, gradient via traces."""
    with torch.no_grad():
        value = op(spike)
    return _replace(op(_replace(spike, trace)), value)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_trace_routing_matches_two_pass_reference(kind):
    torch.manual_seed(0)
    if kind == "linear":
        layer = BinaryLinear(12, 5, bias=True)
        shape = (6, 12)
    else:
        layer = BinaryConv2d(3, 4, 3, stride=2, padding=1, bias=True)
        shape = (6, 3, 9, 9)
    spike = (torch.rand(shape) < 0.3).float().requires_grad_()
    trace = torch.rand(shape)
    g_out = torch.randn_like(layer(spike))

    routed = TraceRouted(layer).train()
    y = routed(torch.cat([spike, trace]))
    gs, gw = torch.autograd.grad(y, (spike, layer.weight), g_out)
    gb = torch.autograd.grad(routed(torch.cat([spike, trace])), layer.bias, g_out)[0]

    spike2 = spike.detach().clone().requires_grad_()
    y_ref = _two_pass(layer, spike2, trace)
    gs_ref, gw_ref, gb_ref = torch.autograd.grad(y_ref, (spike2, layer.weight, layer.bias), g_out)
    assert torch.allclose(y, layer(spike))
    assert torch.allclose(y, y_ref)
    assert torch.allclose(gw, gw_ref, atol=1e-5)
    assert torch.allclose(gs, gs_ref, atol=1e-5)
    assert torch.allclose(gb, gb_ref, atol=1e-5)
    # The weight gradient comes from the trace, not the spikes.
    if kind == "linear":
        assert torch.allclose(gw, g_out.t() @ trace, atol=1e-5)
    else:
        assert torch.allclose(gw, torch.nn.grad.conv2d_weight(trace, layer.weight.shape, g_out, 2, 1), atol=1e-4)
    routed.eval()
    assert torch.equal(routed(spike), layer(spike))


def test_trace_routed_rejects_latent_layers():
    with pytest.raises(TypeError):
        TraceRouted(LatentBinaryConv2d(2, 2, 3))
    with pytest.raises(ValueError):
        TraceRouted(nn.Conv2d(2, 2, 3, padding="same"))


def test_online_network_end_to_end_gradient_equals_reference_conv():
    """conv on spikes in F.conv2d vs our routed conv: forward values identical in train mode."""
    torch.manual_seed(1)
    node = OnlineLIFNode()
    conv = BinaryConv2d(2, 3, 3, padding=1)
    net = nn.Sequential(node, nn.AvgPool2d(2), TraceRouted(conv)).train()
    x = torch.randn(4, 2, 8, 8) + 1
    y = net(x)
    spikes = (x >= 1.0).float()
    assert torch.allclose(y, F.conv2d(F.avg_pool2d(spikes, 2), conv.weight, padding=1), atol=1e-6)


def test_avgpool_saves_nothing_and_matches_torch():
    from bsnn.measure import SavedTensorMeter
    from bsnn.nn import AvgPool2d

    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    for kw in ({"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1}):
        ref = nn.AvgPool2d(**kw)(x)
        with SavedTensorMeter().measure() as meter:
            out = AvgPool2d(**kw)(x)
        assert meter.peak == 0 and torch.equal(out, ref)
        g = torch.randn_like(ref)
        assert torch.allclose(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])


@pytest.mark.parametrize("between", [lambda: nn.Dropout(0.1), lambda: nn.BatchNorm1d(32)])
def test_a_batch_mixing_module_between_online_neuron_and_layer_fails_loudly(between):
    from bsnn.nn import BinaryLinear, OnlineLIFNode, SpikingSequential, TraceRouted
    from bsnn.optim import TBSO
    from bsnn.train import OnlineMethod

    model = SpikingSequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), OnlineLIFNode(), between(),
                              TraceRouted(BinaryLinear(32, 10)))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    with pytest.raises(ValueError, match="receives an online neuron's"):
        OnlineMethod(2).train_batch(model, x, y, TBSO(model.parameters(), time_steps=2))
    del model[4]                                       # the right order trains
    OnlineMethod(2).train_batch(model, x, y, TBSO(model.parameters(), time_steps=2))


@pytest.mark.parametrize("soft_reset", [True, False])
def test_spikingjelly_multistep_lif_is_the_functional_core_stepped_through_time(soft_reset):
    from bsnn.nn import multistep_lif
    from bsnn.nn.neuron import lif_step

    torch.manual_seed(0)
    x = (torch.rand(6, 4, 10) * 2).requires_grad_()
    node = multistep_lif(tau=2.0, v_threshold=1.0, soft_reset=soft_reset)
    s_sj = node(x)
    (s_sj * torch.arange(10.0)).sum().backward()
    g_sj, x.grad = x.grad.clone(), None
    v, out = torch.zeros(4, 10), []
    for t in range(6):
        s, v = lif_step(x[t], v, tau=2.0, v_threshold=1.0, surrogate_function=node.surrogate_function,
                        v_reset=None if soft_reset else 0.0)
        out.append(s)
    s_core = torch.stack(out)
    (s_core * torch.arange(10.0)).sum().backward()
    assert torch.equal(s_core, s_sj) and s_core.sum() > 0
    assert torch.allclose(x.grad, g_sj, atol=1e-6)
