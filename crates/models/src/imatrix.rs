//! Importance matrices (per-input-channel activation mean squares of every matmul weight) and
//! their GGUF file layout, the one llama.cpp's `llama-imatrix` writes and `llama-quantize` reads:
//!
//! - metadata `general.type = "imatrix"`, `imatrix.datasets` (array of strings),
//!   `imatrix.chunk_count` and `imatrix.chunk_size` (u32);
//! - per weight `W`: tensor `W.in_sum2` (F32, dims `[n_in, n_mat]`, the sums of squared inputs)
//!   and `W.counts` (F32, dims `[1, n_mat]`, how many input rows were summed). The importance of
//!   column `j` is `in_sum2[j] / counts`.
//!
//! kiln's dense models have `n_mat = 1`; files with several matrices per weight (mixture of
//! experts) are rejected with a clear error.

use kiln_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use std::collections::BTreeMap;
use std::path::Path;
use thiserror::Error;

const SUMS_SUFFIX: &str = ".in_sum2";
const COUNTS_SUFFIX: &str = ".counts";

/// Everything that can be wrong with an importance matrix file.
#[derive(Debug, Error)]
pub enum ImatrixError {
    #[error("{path}: {source}")]
    Gguf {
        path: String,
        #[source]
        source: kiln_gguf::GgufError,
    },
    #[error("{path}: not an importance matrix: {problem}")]
    Invalid { path: String, problem: String },
    #[error("importance matrix entry {name}: {problem}")]
    Entry { name: String, problem: String },
}

/// Accumulated squared inputs of one weight.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// `Σ x_j²` over every input row seen, one value per input channel.
    pub sums: Vec<f32>,
    /// Number of input rows summed.
    pub count: f64,
}

impl ImatrixEntry {
    /// The importance of each input channel: its mean square (zeros when nothing was seen).
    pub fn importance(&self) -> Vec<f32> {
        if self.count <= 0.0 {
            return vec![0.0; self.sums.len()];
        }
        self.sums
            .iter()
            .map(|&s| (s as f64 / self.count) as f32)
            .collect()
    }
}

/// An importance matrix: entries by weight name, plus where it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imatrix {
    pub entries: BTreeMap<String, ImatrixEntry>,
    /// The calibration texts (file names) it was computed on.
    pub datasets: Vec<String>,
    /// Chunks evaluated.
    pub chunk_count: u32,
    /// Tokens per chunk.
    pub chunk_size: u32,
}

impl Imatrix {
    /// Adds input rows `x` (`rows × n` values) seen by weight `name`.
    pub fn accumulate(&mut self, name: &str, x: &[f32], n: usize) -> Result<(), ImatrixError> {
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(ImatrixError::Entry {
                name: name.into(),
                problem: format!("{} values are not whole rows of {n}", x.len()),
            });
        }
        let e = self
            .entries
            .entry(name.to_owned())
            .or_insert_with(|| ImatrixEntry {
                sums: vec![0.0; n],
                count: 0.0,
            });
        if e.sums.len() != n {
            return Err(ImatrixError::Entry {
                name: name.into(),
                problem: format!("rows of {n} values, earlier rows had {}", e.sums.len()),
            });
        }
        for row in x.chunks_exact(n) {
            for (s, &v) in e.sums.iter_mut().zip(row) {
                *s += v * v;
            }
            e.count += 1.0;
        }
        Ok(())
    }

    /// The importance vector of weight `name`, if the matrix has one.
    pub fn importance(&self, name: &str) -> Option<Vec<f32>> {
        self.entries.get(name).map(ImatrixEntry::importance)
    }

    /// Builds the GGUF layout described in the module docs.
    pub fn to_writer(&self) -> Result<GgufWriter<'static>, ImatrixError> {
        let mut w = GgufWriter::new();
        w.add_metadata("general.type", Value::from("imatrix"));
        w.add_metadata(
            "imatrix.datasets",
            Value::Array(
                self.datasets
                    .iter()
                    .map(|d| Value::String(d.clone()))
                    .collect(),
            ),
        );
        w.add_metadata("imatrix.chunk_count", Value::U32(self.chunk_count));
        w.add_metadata("imatrix.chunk_size", Value::U32(self.chunk_size));
        let entry_err = |name: &str, e: kiln_gguf::GgufError| ImatrixError::Entry {
            name: name.into(),
            problem: e.to_string(),
        };
        for (name, e) in &self.entries {
            let sums: Vec<u8> = e.sums.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(
                format!("{name}{SUMS_SUFFIX}"),
                GgmlType::F32,
                &[e.sums.len() as u64, 1],
                sums,
            )
            .map_err(|err| entry_err(name, err))?;
            w.add_tensor(
                format!("{name}{COUNTS_SUFFIX}"),
                GgmlType::F32,
                &[1, 1],
                (e.count as f32).to_le_bytes().to_vec(),
            )
            .map_err(|err| entry_err(name, err))?;
        }
        Ok(w)
    }

    /// Writes the matrix to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), ImatrixError> {
        self.to_writer()?
            .write_file(path)
            .map_err(|source| ImatrixError::Gguf {
                path: path.display().to_string(),
                source,
            })
    }

    /// Reads an importance matrix written by kiln or llama.cpp.
    pub fn load(path: &Path) -> Result<Imatrix, ImatrixError> {
        let shown = path.display().to_string();
        let file = GgufFile::open(path).map_err(|source| ImatrixError::Gguf {
            path: shown.clone(),
            source,
        })?;
        Self::from_gguf(&file, &shown)
    }

    /// Reads the layout from an opened GGUF file; `shown` names it in errors.
    pub fn from_gguf(file: &GgufFile, shown: &str) -> Result<Imatrix, ImatrixError> {
        let invalid = |problem: String| ImatrixError::Invalid {
            path: shown.into(),
            problem,
        };
        if let Some(t) = file.get("general.type").and_then(Value::as_str) {
            if t != "imatrix" {
                return Err(invalid(format!("general.type is {t:?}")));
            }
        }
        let datasets = file
            .get("imatrix.datasets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let u32_key = |k: &str| {
            file.get(k)
                .and_then(Value::as_u64)
                .map_or(0, |v| v.min(u64::from(u32::MAX)) as u32)
        };
        let mut m = Imatrix {
            entries: BTreeMap::new(),
            datasets,
            chunk_count: u32_key("imatrix.chunk_count"),
            chunk_size: u32_key("imatrix.chunk_size"),
        };
        let f32s = |name: &str| -> Result<Vec<f32>, ImatrixError> {
            let t = file.tensor(name).ok_or_else(|| ImatrixError::Entry {
                name: name.into(),
                problem: "missing (sums and counts come in pairs)".into(),
            })?;
            if t.ggml_type != GgmlType::F32 {
                return Err(ImatrixError::Entry {
                    name: name.into(),
                    problem: format!("type {} (must be f32)", t.ggml_type.name()),
                });
            }
            Ok(file
                .tensor_data(t)
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        for t in file.tensors() {
            let Some(base) = t.name.strip_suffix(SUMS_SUFFIX) else {
                if t.name.ends_with(COUNTS_SUFFIX) {
                    let base = t.name.trim_end_matches(COUNTS_SUFFIX);
                    if file.tensor(&format!("{base}{SUMS_SUFFIX}")).is_none() {
                        return Err(ImatrixError::Entry {
                            name: base.into(),
                            problem: "counts without sums".into(),
                        });
                    }
                }
                continue;
            };
            let sums = f32s(&t.name)?;
            let counts = f32s(&format!("{base}{COUNTS_SUFFIX}"))?;
            let entry_err = |problem: String| ImatrixError::Entry {
                name: base.into(),
                problem,
            };
            if counts.len() != 1 {
                return Err(entry_err(format!(
                    "{} matrices per weight (mixture of experts) are not supported",
                    counts.len()
                )));
            }
            let count = f64::from(counts[0]);
            if !(count.is_finite() && count >= 0.0) {
                return Err(entry_err(format!("count {count} is not a valid count")));
            }
            if let Some(bad) = sums.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(entry_err(format!(
                    "sum of squares {bad} is negative or not finite"
                )));
            }
            m.entries.insert(base.into(), ImatrixEntry { sums, count });
        }
        if m.entries.is_empty() {
            return Err(invalid("it holds no `*.in_sum2` tensors".into()));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_gguf() {
        let mut m = Imatrix {
            datasets: vec!["calib.txt".into()],
            chunk_count: 3,
            chunk_size: 512,
            ..Imatrix::default()
        };
        m.accumulate("blk.0.attn_q.weight", &[1.0, 2.0, 3.0, -1.0], 2)
            .unwrap();
        m.accumulate("blk.0.ffn_down.weight", &[0.5, 0.5, 0.5], 3)
            .unwrap();
        assert!(m.accumulate("blk.0.attn_q.weight", &[1.0; 3], 3).is_err());
        let mut bytes = Vec::new();
        m.to_writer().unwrap().write_to(&mut bytes).unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();
        let back = Imatrix::from_gguf(&f, "mem").unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.importance("blk.0.attn_q.weight").unwrap(),
            vec![5.0, 2.5]
        );
    }

    #[test]
    fn rejects_files_that_are_not_imatrices() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", Value::from("llama"));
        w.add_tensor("x.weight", GgmlType::F32, &[1], vec![0; 4])
            .unwrap();
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert!(Imatrix::from_gguf(&f, "mem").is_err());

        let mut w = GgufWriter::new();
        w.add_tensor("a.in_sum2", GgmlType::F32, &[2, 1], vec![0; 8])
            .unwrap();
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();
        let e = Imatrix::from_gguf(&f, "mem").unwrap_err().to_string();
        assert!(e.contains("a.counts"), "{e}");
    }
}
