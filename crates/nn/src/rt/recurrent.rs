//! Streaming recurrent cells: LSTM (gates i, f, g, o; one summed bias) and GRU (gates z, r, n;
//! `reset_after` form with separate input and recurrent biases, as Keras and PyTorch use).

use super::{check_len, RtError, RtMatrix};
use kiln_tensor::rnn_cell::{gru_update, lstm_update};

fn check_gates(
    what: &str,
    w_ih: &RtMatrix,
    w_hh: &RtMatrix,
    gates: usize,
) -> Result<usize, RtError> {
    let g = w_hh.rows();
    if g == 0 || !g.is_multiple_of(gates) {
        return Err(RtError::shape(
            what,
            format!("recurrent weights have {g} rows, not {gates} gates of equal size"),
        ));
    }
    let u = g / gates;
    if w_hh.cols() != u || w_ih.rows() != g {
        return Err(RtError::shape(
            what,
            format!(
                "input weights {}x{} and recurrent weights {}x{} disagree on {u} units",
                w_ih.rows(),
                w_ih.cols(),
                w_hh.rows(),
                w_hh.cols()
            ),
        ));
    }
    Ok(u)
}

/// LSTM: `c' = f·c + i·tanh(g)`, `h' = o·tanh(c')`, gates from `W_ih·x + W_hh·h + b`.
#[derive(Debug, Clone)]
pub struct Lstm {
    units: usize,
    w_ih: RtMatrix,
    w_hh: RtMatrix,
    b: Vec<f32>,
    /// `b` at the gate products' positions (see [`RtMatrix::with_gate_lanes`]).
    b_lanes: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
    gates: Vec<f32>,
}

impl Lstm {
    /// `w_ih` `[4u][in]`, `w_hh` `[4u][u]`, `bias` `[4u]` (input and recurrent biases summed).
    pub fn new(w_ih: RtMatrix, w_hh: RtMatrix, bias: Vec<f32>) -> Result<Lstm, RtError> {
        let u = check_gates("lstm", &w_ih, &w_hh, 4)?;
        check_len("lstm bias", &bias, 4 * u)?;
        let w_ih = w_ih.with_gate_lanes(4, "lstm input weights")?;
        let w_hh = w_hh.with_gate_lanes(4, "lstm recurrent weights")?;
        let b_lanes = w_ih.spread(&bias);
        Ok(Lstm {
            units: u,
            gates: vec![0.0; w_ih.out_len()],
            w_ih,
            w_hh,
            b: bias,
            b_lanes,
            h: vec![0.0; u],
            c: vec![0.0; u],
        })
    }
    pub fn units(&self) -> usize {
        self.units
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.w_ih.cols()
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.units
    }
    pub fn reset(&mut self) {
        self.h.fill(0.0);
        self.c.fill(0.0);
    }
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        RtMatrix::matvec2_bias(
            &mut self.w_ih,
            x,
            &mut self.w_hh,
            &self.h,
            &self.b_lanes,
            &mut self.gates,
        );
        let stride = self.w_ih.gate_stride(4);
        lstm_update(&self.gates, stride, &mut self.c, &mut self.h);
        y.copy_from_slice(&self.h);
    }
    pub fn memory_bytes(&self) -> usize {
        self.w_ih.memory_bytes()
            + self.w_hh.memory_bytes()
            + (self.b.len() + self.b_lanes.len() + self.h.len() + self.c.len() + self.gates.len())
                * 4
    }
    pub fn n_params(&self) -> usize {
        let g = 4 * self.units;
        g * (self.w_ih.cols() + self.units) + g
    }
    pub fn matrices(&self) -> Vec<(&'static str, &RtMatrix)> {
        vec![("weight_ih", &self.w_ih), ("weight_hh", &self.w_hh)]
    }
    pub fn matrices_mut(&mut self) -> Vec<&mut RtMatrix> {
        vec![&mut self.w_ih, &mut self.w_hh]
    }
    pub fn vectors(&self) -> Vec<(&'static str, &[f32])> {
        vec![("bias", &self.b)]
    }
}

/// GRU: `z = σ(..)`, `r = σ(..)`, `n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn))`,
/// `h' = (1 − z)·n + z·h`.
#[derive(Debug, Clone)]
pub struct Gru {
    units: usize,
    w_ih: RtMatrix,
    w_hh: RtMatrix,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
    /// The biases at the gate products' positions (see [`RtMatrix::with_gate_lanes`]).
    b_ih_lanes: Vec<f32>,
    b_hh_lanes: Vec<f32>,
    h: Vec<f32>,
    gi: Vec<f32>,
    gh: Vec<f32>,
}

impl Gru {
    /// `w_ih` `[3u][in]`, `w_hh` `[3u][u]`, biases `[3u]`; gate blocks in order z, r, n.
    pub fn new(
        w_ih: RtMatrix,
        w_hh: RtMatrix,
        b_ih: Vec<f32>,
        b_hh: Vec<f32>,
    ) -> Result<Gru, RtError> {
        let u = check_gates("gru", &w_ih, &w_hh, 3)?;
        check_len("gru input bias", &b_ih, 3 * u)?;
        check_len("gru recurrent bias", &b_hh, 3 * u)?;
        let w_ih = w_ih.with_gate_lanes(3, "gru input weights")?;
        let w_hh = w_hh.with_gate_lanes(3, "gru recurrent weights")?;
        Ok(Gru {
            units: u,
            b_ih_lanes: w_ih.spread(&b_ih),
            b_hh_lanes: w_hh.spread(&b_hh),
            gi: vec![0.0; w_ih.out_len()],
            gh: vec![0.0; w_hh.out_len()],
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            h: vec![0.0; u],
        })
    }
    pub fn units(&self) -> usize {
        self.units
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.w_ih.cols()
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.units
    }
    pub fn reset(&mut self) {
        self.h.fill(0.0);
    }
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        self.w_ih.matvec_bias(x, &self.b_ih_lanes, &mut self.gi);
        self.w_hh
            .matvec_bias(&self.h, &self.b_hh_lanes, &mut self.gh);
        let stride = self.w_ih.gate_stride(3);
        gru_update(&self.gi, &self.gh, stride, &mut self.h);
        y.copy_from_slice(&self.h);
    }
    pub fn memory_bytes(&self) -> usize {
        self.w_ih.memory_bytes()
            + self.w_hh.memory_bytes()
            + (self.b_ih.len()
                + self.b_hh.len()
                + self.b_ih_lanes.len()
                + self.b_hh_lanes.len()
                + self.h.len()
                + self.gi.len()
                + self.gh.len())
                * 4
    }
    pub fn n_params(&self) -> usize {
        let g = 3 * self.units;
        g * (self.w_ih.cols() + self.units) + 2 * g
    }
    pub fn matrices(&self) -> Vec<(&'static str, &RtMatrix)> {
        vec![("weight_ih", &self.w_ih), ("weight_hh", &self.w_hh)]
    }
    pub fn matrices_mut(&mut self) -> Vec<&mut RtMatrix> {
        vec![&mut self.w_ih, &mut self.w_hh]
    }
    pub fn vectors(&self) -> Vec<(&'static str, &[f32])> {
        vec![("bias_ih", &self.b_ih), ("bias_hh", &self.b_hh)]
    }
}
