//! Test helpers shared by the integration tests: a deliberately naive reference of the
//! sampling chain (full sort, std `exp`, normalize after every stage) to compare against.
#![allow(dead_code)]

use kiln_sampler::SamplingParams;

/// NaN as -inf, +inf as the largest finite value: the sampler's documented treatment.
pub fn clean(l: f32) -> f32 {
    if l.is_nan() {
        f32::NEG_INFINITY
    } else if l == f32::INFINITY {
        f32::MAX
    } else {
        l
    }
}

/// The logits after the llama.cpp penalties, counting occurrences naively over the window.
pub fn penalized(logits: &[f32], p: &SamplingParams, history: &[u32]) -> Vec<f32> {
    let mut out: Vec<f32> = logits.iter().map(|&l| clean(l)).collect();
    let window = &history[history.len().saturating_sub(p.repeat_last_n)..];
    for (id, l) in out.iter_mut().enumerate() {
        let count = window.iter().filter(|&&t| t as usize == id).count();
        if count == 0 {
            continue;
        }
        let mut v = if *l <= 0.0 {
            *l * p.repeat_penalty
        } else {
            *l / p.repeat_penalty
        };
        v -= count as f32 * p.frequency_penalty + p.presence_penalty;
        *l = clean(v);
    }
    out
}

/// Index of the largest value, lowest index on ties, 0 when all are -inf.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// The post-chain distribution, most probable first; `[]` for empty logits.
pub fn reference_chain(logits: &[f32], p: &SamplingParams, history: &[u32]) -> Vec<(u32, f64)> {
    if logits.is_empty() {
        return Vec::new();
    }
    let l = penalized(logits, p, history);
    let best = argmax(&l);
    if p.temperature == 0.0 || l[best as usize] == f32::NEG_INFINITY {
        return vec![(best, 1.0)];
    }
    let mut order: Vec<u32> = (0..l.len() as u32).collect();
    order.sort_by(|&a, &b| {
        l[b as usize]
            .partial_cmp(&l[a as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    if p.top_k > 0 {
        order.truncate(p.top_k);
    }
    let max = f64::from(l[best as usize]);
    let t = f64::from(p.temperature);
    let mut probs: Vec<(u32, f64)> = order
        .iter()
        .map(|&id| (id, ((f64::from(l[id as usize]) - max) / t).exp()))
        .collect();
    normalize(&mut probs);
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut cut = probs.len();
        for (i, &(_, q)) in probs.iter().enumerate() {
            cum += q;
            if cum >= f64::from(p.top_p) {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        normalize(&mut probs);
    }
    let p_max = probs[0].1;
    probs.retain(|&(_, q)| q > 0.0 && q >= f64::from(p.min_p) * p_max);
    normalize(&mut probs);
    probs
}

fn normalize(probs: &mut [(u32, f64)]) {
    let s: f64 = probs.iter().map(|p| p.1).sum();
    for p in probs.iter_mut() {
        p.1 /= s;
    }
}

/// Softmax of `logits / temperature` in f64.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| ((f64::from(l) - f64::from(max)) / f64::from(temperature)).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// A reproducible pseudo-random logit vector (a cheap LCG; only needs to look irregular).
pub fn pseudo_logits(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            (u * 2.0 - 1.0) * scale
        })
        .collect()
}
