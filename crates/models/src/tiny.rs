//! Tiny random llama models written with kiln's own GGUF writer, and a naive f64 reference
//! forward pass over them. Tests use these to check the real forward pass end to end without
//! a downloaded model; the reference shares no code with `nn` (only dequantization).

use kiln_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use kiln_quant::QuantType;

/// Shape and storage types of a tiny model. Layer `i` uses `layer_types[i % len]` for
/// (q, k, v, o, gate, up, down).
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_layer: usize,
    pub n_ctx: usize,
    pub embedding_type: QuantType,
    /// `None` ties the output projection to the embedding table.
    pub output_type: Option<QuantType>,
    pub layer_types: Vec<[QuantType; 7]>,
    pub seed: u64,
}

impl Default for TinySpec {
    /// 256-wide, 2 layers, every weight type kiln computes with appears somewhere.
    fn default() -> Self {
        use QuantType::*;
        TinySpec {
            n_embd: 256,
            n_ff: 512,
            n_head: 4,
            n_head_kv: 2,
            n_layer: 2,
            n_ctx: 256,
            embedding_type: Q8_0,
            output_type: None,
            layer_types: vec![
                [Q4_1, Q8_0, Q4_0, F16, Q4_1, Q4_1, Q4_1],
                [Q4_K, Q6_K, BF16, F32, Q4_K, Q6_K, Q4_K],
            ],
            seed: 42,
        }
    }
}

/// The GPT-2 byte-to-character map used by byte-level BPE vocabularies.
pub fn byte_to_char(b: u8) -> char {
    let printable = |c: u8| (b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || c >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// Merges of the tiny vocabulary (on top of the 256 byte tokens).
const TINY_MERGES: &[(&str, &str)] = &[("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "t")];

/// Deterministic pseudo-random numbers (splitmix64) so tiny models are reproducible.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn ggml(ty: QuantType) -> GgmlType {
    GgmlType::from_id(ty.ggml_id()).unwrap_or(GgmlType::F32)
}

fn quantized(ty: QuantType, values: &[f32], cols: usize) -> Vec<u8> {
    let row_bytes = ty.row_bytes(cols).unwrap_or(0);
    let mut out = vec![0u8; row_bytes * (values.len() / cols)];
    for (src, dst) in values
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        // A failure here means the spec's shapes do not fit the type; the writer then
        // rejects the tensor with a clear error.
        let _ = kiln_quant::quantize_row(ty, src, dst);
    }
    out
}

/// The vocabulary of tiny models: 256 byte tokens, a few merges, two control tokens.
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    let mut types = vec![1i32; 256];
    let mut merges = Vec::new();
    for (a, b) in TINY_MERGES {
        tokens.push(format!("{a}{b}"));
        types.push(1);
        merges.push(format!("{a} {b}"));
    }
    for special in ["<|im_start|>", "<|im_end|>"] {
        tokens.push(special.to_string());
        types.push(3);
    }
    (tokens, types, merges)
}

/// Writes a tiny llama GGUF described by `spec` into memory.
pub fn write_tiny_llama(spec: &TinySpec) -> Result<Vec<u8>, kiln_gguf::GgufError> {
    let (tokens, types, merges) = tiny_vocab();
    let n_vocab = tokens.len();
    let head_dim = spec.n_embd / spec.n_head;
    let mut w = GgufWriter::new();
    let arr = |v: Vec<Value>| Value::Array(v);
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("general.name", Value::String("kiln tiny llama".into()));
    w.add_metadata("llama.context_length", Value::U32(spec.n_ctx as u32));
    w.add_metadata("llama.embedding_length", Value::U32(spec.n_embd as u32));
    w.add_metadata("llama.block_count", Value::U32(spec.n_layer as u32));
    w.add_metadata("llama.feed_forward_length", Value::U32(spec.n_ff as u32));
    w.add_metadata("llama.attention.head_count", Value::U32(spec.n_head as u32));
    w.add_metadata(
        "llama.attention.head_count_kv",
        Value::U32(spec.n_head_kv as u32),
    );
    w.add_metadata("llama.rope.freq_base", Value::F32(10000.0));
    w.add_metadata("llama.rope.dimension_count", Value::U32(head_dim as u32));
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.pre", Value::String("default".into()));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        arr(tokens.into_iter().map(Value::String).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        arr(types.into_iter().map(Value::I32).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.merges",
        arr(merges.into_iter().map(Value::String).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.bos_token_id",
        Value::U32(n_vocab as u32 - 2),
    );
    w.add_metadata(
        "tokenizer.ggml.eos_token_id",
        Value::U32(n_vocab as u32 - 1),
    );
    w.add_metadata("tokenizer.ggml.add_bos_token", Value::Bool(false));

    let mut rng = Rng(spec.seed);
    let mut matrix = |rows: usize, cols: usize, scale: f32| -> Vec<f32> {
        (0..rows * cols).map(|_| rng.uniform() * scale).collect()
    };
    let (d, ff) = (spec.n_embd, spec.n_ff);
    let (qd, kvd) = (spec.n_head * head_dim, spec.n_head_kv * head_dim);
    let emb = matrix(n_vocab, d, 1.0);
    w.add_tensor(
        "token_embd.weight",
        ggml(spec.embedding_type),
        &[d as u64, n_vocab as u64],
        quantized(spec.embedding_type, &emb, d),
    )?;
    let norm = |rng_vals: Vec<f32>| -> Vec<u8> {
        rng_vals
            .iter()
            .flat_map(|v| (1.0 + 0.1 * v).to_le_bytes())
            .collect()
    };
    for layer in 0..spec.n_layer {
        let types = spec.layer_types[layer % spec.layer_types.len().max(1)];
        let shapes = [
            ("attn_q", d, qd),
            ("attn_k", d, kvd),
            ("attn_v", d, kvd),
            ("attn_output", qd, d),
            ("ffn_gate", d, ff),
            ("ffn_up", d, ff),
            ("ffn_down", ff, d),
        ];
        for ((name, n_in, n_out), ty) in shapes.into_iter().zip(types) {
            let scale = 1.0 / (n_in as f32).sqrt() * 1.7;
            let values = matrix(n_out, n_in, scale);
            w.add_tensor(
                format!("blk.{layer}.{name}.weight"),
                ggml(ty),
                &[n_in as u64, n_out as u64],
                quantized(ty, &values, n_in),
            )?;
        }
        for name in ["attn_norm", "ffn_norm"] {
            let v = matrix(1, d, 1.0);
            w.add_tensor(
                format!("blk.{layer}.{name}.weight"),
                GgmlType::F32,
                &[d as u64],
                norm(v),
            )?;
        }
    }
    let v = matrix(1, d, 1.0);
    w.add_tensor("output_norm.weight", GgmlType::F32, &[d as u64], norm(v))?;
    if let Some(ty) = spec.output_type {
        let values = matrix(n_vocab, d, 1.0 / (d as f32).sqrt());
        w.add_tensor(
            "output.weight",
            ggml(ty),
            &[d as u64, n_vocab as u64],
            quantized(ty, &values, d),
        )?;
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes)?;
    Ok(bytes)
}

fn dequantized(file: &GgufFile, name: &str) -> Option<(Vec<f64>, usize)> {
    let t = file.tensor(name)?;
    let ty = QuantType::from_ggml_id(t.ggml_type.id())?;
    let cols = *t.dims.first()? as usize;
    let data = file.tensor_data(t);
    let row_bytes = ty.row_bytes(cols).ok()?;
    let mut out = Vec::with_capacity(t.n_elements() as usize);
    let mut row = vec![0f32; cols];
    for r in data.chunks_exact(row_bytes) {
        kiln_quant::dequantize_row(ty, r, &mut row).ok()?;
        out.extend(row.iter().map(|&v| f64::from(v)));
    }
    Some((out, cols))
}

fn matvec(w: &[f64], cols: usize, x: &[f64]) -> Vec<f64> {
    w.chunks_exact(cols)
        .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(a, b)| a * s * b).collect()
}

fn rope(x: &mut [f64], head_dim: usize, pos: usize, base: f64) {
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..head_dim / 2 {
            let theta = pos as f64 * base.powf(-2.0 * i as f64 / head_dim as f64);
            let (s, c) = theta.sin_cos();
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * c - b * s;
            head[2 * i + 1] = a * s + b * c;
        }
    }
}

/// Logits (one row of `n_vocab` per token) of a llama GGUF for `tokens` from position 0,
/// computed naively in f64 from dequantized weights. `None` if the file is not a llama model
/// this function understands. For small test models only: it is slow.
pub fn reference_logits(file: &GgufFile, tokens: &[u32]) -> Option<Vec<Vec<f32>>> {
    let c = crate::LlamaConfig::from_gguf(file).ok()?;
    let w = |n: &str| dequantized(file, n).map(|(v, _)| v);
    let (hd, nh, nkv) = (c.head_dim, c.n_head, c.n_head_kv);
    let (emb, d) = dequantized(file, "token_embd.weight")?;
    let out_w = w("output.weight").unwrap_or_else(|| emb.clone());
    let eps = f64::from(c.rms_eps);
    let base = f64::from(c.rope_freq_base);
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| {
            emb.get(t as usize * d..(t as usize + 1) * d)
                .map(<[f64]>::to_vec)
        })
        .collect::<Option<_>>()?;
    for l in 0..c.n_layer {
        let p = |n: &str| w(&format!("blk.{l}.{n}.weight"));
        let (wq, wk, wv, wo) = (p("attn_q")?, p("attn_k")?, p("attn_v")?, p("attn_output")?);
        let (wg, wu, wd) = (p("ffn_gate")?, p("ffn_up")?, p("ffn_down")?);
        let (an, fnorm) = (p("attn_norm")?, p("ffn_norm")?);
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let mut queries = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let xn = rms_norm(x, &an, eps);
            let mut q = matvec(&wq, d, &xn);
            let mut k = matvec(&wk, d, &xn);
            rope(&mut q, hd, pos, base);
            rope(&mut k, hd, pos, base);
            queries.push(q);
            keys.push(k);
            values.push(matvec(&wv, d, &xn));
        }
        for (pos, x) in xs.iter_mut().enumerate() {
            let mut attn = vec![0.0; nh * hd];
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let q = &queries[pos][h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (0..=pos)
                    .map(|t| {
                        let k = &keys[t][kvh * hd..(kvh + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (t, p) in e.iter().enumerate() {
                    for i in 0..hd {
                        attn[h * hd + i] += p / z * values[t][kvh * hd + i];
                    }
                }
            }
            let o = matvec(&wo, nh * hd, &attn);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = rms_norm(x, &fnorm, eps);
            let g = matvec(&wg, d, &xn);
            let u = matvec(&wu, d, &xn);
            let h: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(&wd, c.n_ff, &h);
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
    }
    let on = w("output_norm.weight")?;
    Some(
        xs.iter()
            .map(|x| {
                matvec(&out_w, d, &rms_norm(x, &on, eps))
                    .into_iter()
                    .map(|v| v as f32)
                    .collect()
            })
            .collect(),
    )
}
