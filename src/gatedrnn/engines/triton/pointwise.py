"""The cells' pointwise math as Triton helpers, each next to its derivatives.

Written once here and inlined by every kernel that needs it: the row kernels of the alternating
form (``lstm``, ``gru``, ``slstm``) and the persistent head-wise kernels (``*_heads``). The
helpers work on blocks of any shape; the equations are those of ``gatedrnn.equations.cells``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import sigmoid, tanh


@triton.jit
def lstm_gates(a_i, a_f, a_g, a_o, cp, p_i, p_f, p_o, PEEP: tl.constexpr):
    """The gates and c' from the pre-activations and c (blocks of any shape)::

        i = σ(a_i + P_i c),  f = σ(a_f + P_f c),  g = tanh(a_g),  c' = f c + i g,  o = σ(a_o + P_o c')
    """
    if PEEP:
        a_i += p_i * cp
        a_f += p_f * cp
    ig = sigmoid(a_i)
    fg = sigmoid(a_f)
    gg = tanh(a_g)
    cn = fg * cp + ig * gg
    if PEEP:
        a_o += p_o * cn
    return ig, fg, gg, sigmoid(a_o), cn


@triton.jit
def lstm_gates_back(dcn, dct, dao, ig, fg, gg, cp, p_i, p_f, p_o, PEEP: tl.constexpr):
    """The derivatives of ``lstm_gates`` from δc' (all that reaches c' but its peephole to o), δa_o
    and dct, the part of dL/dc that skips the step (zoneout); returns (δa_i, δa_f, δa_g, δc)::

        δc' += P_o δa_o;  δa_i = δc' g i(1 − i),  δa_f = δc' c f(1 − f),  δa_g = δc' i (1 − g²)
        δc = δc' f + dct + P_i δa_i + P_f δa_f
    """
    if PEEP:
        dcn += p_o * dao
    dai = dcn * gg * ig * (1.0 - ig)
    daf = dcn * cp * fg * (1.0 - fg)
    dag = dcn * ig * (1.0 - gg * gg)
    dcprev = dcn * fg + dct
    if PEEP:
        dcprev += p_i * dai + p_f * daf
    return dai, daf, dag, dcprev


@triton.jit
def gru_gates(u_r, u_z, u_n, v_r, v_z, v_n, hp):
    """The reset_after=True gates and h' before zoneout, from u, v (blocks of any shape) and h::

        r = σ(u_r + v_r),  z = σ(u_z + v_z),  n = tanh(u_n + r v_n),  h' = (1 − z) n + z h
    """
    rg = sigmoid(u_r + v_r)
    zg = sigmoid(u_z + v_z)
    ng = tanh(u_n + rg * v_n)
    return rg, zg, ng, (1.0 - zg) * ng + zg * hp


@triton.jit
def gru_gates_back(e, rg, zg, ng, hp, v_n):
    """The derivatives of ``gru_gates`` from e = dL/dh'; returns (δa_r, δa_z, δa_n, δv_n, and
    the part of dL/dh through z)::

        δa_z = e (h − n) z(1 − z),  δa_n = e (1 − z)(1 − n²),  δa_r = δa_n v_n r(1 − r),
        δv_n = r δa_n,  dL/dh ⊇ z e
    """
    dan = e * (1.0 - zg) * (1.0 - ng * ng)
    return dan * v_n * rg * (1.0 - rg), e * (hp - ng) * zg * (1.0 - zg), dan, dan * rg, e * zg


@triton.jit
def log_sigmoid(x):
    """log σ(x) = min(x, 0) − log(1 + exp(−|x|)), finite for every finite x."""
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def slstm_step(a_i, a_f, a_z, a_o, cp, np_, mp):
    """One step on blocks of pre-activations ĩ, f̃, z̃, õ and the state c, n, m before it;
    returns (h', c', n', m', u) with u = log σ(f̃) + m (kept for the backward)::

        m' = max(u, ĩ),  i = exp(ĩ − m'),  f = exp(u − m'),  c' = f c + i tanh(z̃),
        n' = f n + i,  h' = σ(õ) c' / n'
    """
    u = log_sigmoid(a_f) + mp
    mn = tl.maximum(u, a_i)
    ig = tl.exp(a_i - mn)
    fg = tl.exp(u - mn)
    cn = fg * cp + ig * tanh(a_z)
    nn = fg * np_ + ig
    return sigmoid(a_o) * cn / nn, cn, nn, mn, u


@triton.jit
def slstm_step_back(a_i, a_f, a_z, a_o, u, cp, np_, cn, nn, gh, dc, dn, dm):
    """The derivatives of ``slstm_step`` from δh = dL/dh' (incl. the output's) and dc, dn, dm =
    dL/d(c', n', m'); returns (δĩ, δf̃, δz̃, δõ, dL/dc, dL/dn, dL/dm) of the step's inputs::

        δc' = dc + δh σ(õ)/n';  δn' = dn − δh σ(õ) c'/n'²;  δõ = δh c'/n' σ'(õ)
        δf = δc' c + δn' n;  δi = δc' tanh(z̃) + δn';  δz̃ = δc' i (1 − tanh² z̃)
        δĩ = δi i,  δu = δf f;  δm' = dm − δĩ − δu goes to the larger of u, ĩ (half each on a tie)
        δf̃ = δu σ(−f̃);  dL/dc = δc' f,  dL/dn = δn' f,  dL/dm = δu
    """
    mn = tl.maximum(u, a_i)
    ig = tl.exp(a_i - mn)
    fg = tl.exp(u - mn)
    tz = tanh(a_z)
    so = sigmoid(a_o)
    gc = dc + gh * so / nn
    gn = dn - gh * so * cn / (nn * nn)
    dao = gh * cn / nn * so * (1.0 - so)
    gf = gc * cp + gn * np_
    daz = gc * ig * (1.0 - tz * tz)
    dai = (gc * tz + gn) * ig
    du = gf * fg
    gm = dm - dai - du
    share = tl.where(u > a_i, 1.0, tl.where(a_i > u, 0.0, 0.5))  # the max's gradient to u
    du += share * gm
    dai += (1.0 - share) * gm
    return dai, du * sigmoid(-a_f), daz, dao, gc * fg, gn * fg, du
