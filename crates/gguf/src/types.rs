//! `GgmlType`: the ggml tensor element types a GGUF file can name, with their ids, names and
//! block geometry (elements per block, bytes per block). No quantization math lives here.

/// A ggml tensor element type, numbered as in ggml (`enum ggml_type`).
///
/// Ids that ggml has retired (4, 5, 31–33, 36–38) are not represented; [`GgmlType::from_id`]
/// returns `None` for them.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, blocks of 32 with an f16 scale.
    Q4_0,
    /// 4-bit, blocks of 32 with f16 scale and minimum.
    Q4_1,
    /// 5-bit, blocks of 32 with an f16 scale.
    Q5_0,
    /// 5-bit, blocks of 32 with f16 scale and minimum.
    Q5_1,
    /// 8-bit, blocks of 32 with an f16 scale.
    Q8_0,
    /// 8-bit, blocks of 32 with f16 scale and f16 sum.
    Q8_1,
    /// 2-bit K-quant, super-blocks of 256.
    Q2_K,
    /// 3-bit K-quant, super-blocks of 256.
    Q3_K,
    /// 4-bit K-quant, super-blocks of 256.
    Q4_K,
    /// 5-bit K-quant, super-blocks of 256.
    Q5_K,
    /// 6-bit K-quant, super-blocks of 256.
    Q6_K,
    /// 8-bit K-quant (intermediate format), super-blocks of 256.
    Q8_K,
    /// 2.06 bpw i-quant.
    IQ2_XXS,
    /// 2.31 bpw i-quant.
    IQ2_XS,
    /// 3.06 bpw i-quant.
    IQ3_XXS,
    /// 1.56 bpw i-quant.
    IQ1_S,
    /// 4.5 bpw non-linear i-quant, blocks of 32.
    IQ4_NL,
    /// 3.44 bpw i-quant.
    IQ3_S,
    /// 2.5 bpw i-quant.
    IQ2_S,
    /// 4.25 bpw non-linear i-quant, super-blocks of 256.
    IQ4_XS,
    /// 8-bit signed integer.
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 64-bit IEEE float.
    F64,
    /// 1.75 bpw i-quant.
    IQ1_M,
    /// bfloat16.
    BF16,
    /// Ternary, 1.69 bpw.
    TQ1_0,
    /// Ternary, 2.06 bpw.
    TQ2_0,
    /// MX FP4, blocks of 32 with an E8M0 scale.
    MXFP4,
}

/// (type, ggml id, ggml name, elements per block, bytes per block), in id order.
const TABLE: &[(GgmlType, u32, &str, usize, usize)] = &[
    (GgmlType::F32, 0, "f32", 1, 4),
    (GgmlType::F16, 1, "f16", 1, 2),
    (GgmlType::Q4_0, 2, "q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "iq2_xxs", 256, 66),
    (GgmlType::IQ2_XS, 17, "iq2_xs", 256, 74),
    (GgmlType::IQ3_XXS, 18, "iq3_xxs", 256, 98),
    (GgmlType::IQ1_S, 19, "iq1_s", 256, 50),
    (GgmlType::IQ4_NL, 20, "iq4_nl", 32, 18),
    (GgmlType::IQ3_S, 21, "iq3_s", 256, 110),
    (GgmlType::IQ2_S, 22, "iq2_s", 256, 82),
    (GgmlType::IQ4_XS, 23, "iq4_xs", 256, 136),
    (GgmlType::I8, 24, "i8", 1, 1),
    (GgmlType::I16, 25, "i16", 1, 2),
    (GgmlType::I32, 26, "i32", 1, 4),
    (GgmlType::I64, 27, "i64", 1, 8),
    (GgmlType::F64, 28, "f64", 1, 8),
    (GgmlType::IQ1_M, 29, "iq1_m", 256, 56),
    (GgmlType::BF16, 30, "bf16", 1, 2),
    (GgmlType::TQ1_0, 34, "tq1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "tq2_0", 256, 66),
    (GgmlType::MXFP4, 39, "mxfp4", 32, 17),
];

impl GgmlType {
    /// Every type this crate knows, in ggml id order.
    pub const ALL: [GgmlType; 32] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
    ];

    /// The type with ggml id `id`, or `None` for unknown or retired ids.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.1 == id).map(|row| row.0)
    }

    /// The type named `name` as ggml spells it (`"q4_K"`, `"bf16"`); case-sensitive.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.2 == name).map(|row| row.0)
    }

    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        // `TABLE` lists the variants in declaration order, so the discriminant is the row index.
        &TABLE[self as usize]
    }

    /// The ggml id written in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The ggml name (`"f32"`, `"q4_0"`, `"q6_K"`, `"bf16"`, ...).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block: 1 for plain types, 32 for the legacy quants, 256 for K- and most
    /// i-quants. Every row length (`dims[0]`) must be a multiple of it.
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// True for types stored in blocks of more than one element.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes needed for `n_elements` consecutive elements (one row of that length).
    ///
    /// `None` if `n_elements` is not a multiple of [`GgmlType::block_size`] or the byte count
    /// does not fit in a `u64`.
    pub fn row_bytes(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_declaration_order() {
        assert_eq!(TABLE.len(), GgmlType::ALL.len());
        for (i, t) in GgmlType::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].0, *t);
            assert_eq!(*t as usize, i);
        }
    }

    #[test]
    fn ids_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        for retired in [4, 5, 31, 32, 33, 36, 37, 38, 40, u32::MAX] {
            assert_eq!(GgmlType::from_id(retired), None);
        }
    }

    #[test]
    fn spec_ids_and_names() {
        let expect = [
            (GgmlType::F32, 0, "f32"),
            (GgmlType::F16, 1, "f16"),
            (GgmlType::Q4_0, 2, "q4_0"),
            (GgmlType::Q4_1, 3, "q4_1"),
            (GgmlType::Q5_0, 6, "q5_0"),
            (GgmlType::Q5_1, 7, "q5_1"),
            (GgmlType::Q8_0, 8, "q8_0"),
            (GgmlType::Q8_1, 9, "q8_1"),
            (GgmlType::Q2_K, 10, "q2_K"),
            (GgmlType::Q3_K, 11, "q3_K"),
            (GgmlType::Q4_K, 12, "q4_K"),
            (GgmlType::Q5_K, 13, "q5_K"),
            (GgmlType::Q6_K, 14, "q6_K"),
            (GgmlType::Q8_K, 15, "q8_K"),
            (GgmlType::I8, 24, "i8"),
            (GgmlType::I16, 25, "i16"),
            (GgmlType::I32, 26, "i32"),
            (GgmlType::I64, 27, "i64"),
            (GgmlType::F64, 28, "f64"),
            (GgmlType::BF16, 30, "bf16"),
        ];
        for (t, id, name) in expect {
            assert_eq!(t.id(), id, "{name}");
            assert_eq!(t.name(), name);
        }
    }

    #[test]
    fn block_geometry_matches_ggml_structs() {
        // Bytes per block derived from the ggml block structs (d/dmin are f16 unless noted).
        assert_eq!(GgmlType::Q4_0.type_size(), 2 + 16);
        assert_eq!(GgmlType::Q4_1.type_size(), 2 + 2 + 16);
        assert_eq!(GgmlType::Q5_0.type_size(), 2 + 4 + 16);
        assert_eq!(GgmlType::Q5_1.type_size(), 2 + 2 + 4 + 16);
        assert_eq!(GgmlType::Q8_0.type_size(), 2 + 32);
        assert_eq!(GgmlType::Q8_1.type_size(), 2 + 2 + 32);
        assert_eq!(GgmlType::Q2_K.type_size(), 16 + 64 + 2 + 2);
        assert_eq!(GgmlType::Q3_K.type_size(), 32 + 64 + 12 + 2);
        assert_eq!(GgmlType::Q4_K.type_size(), 2 + 2 + 12 + 128);
        assert_eq!(GgmlType::Q5_K.type_size(), 2 + 2 + 12 + 32 + 128);
        assert_eq!(GgmlType::Q6_K.type_size(), 128 + 64 + 16 + 2);
        assert_eq!(GgmlType::Q8_K.type_size(), 4 + 256 + 2 * 16);
        for t in GgmlType::ALL {
            let k = t.block_size();
            assert!(k == 1 || k == 32 || k == 256, "{t}");
            assert_eq!(t.is_quantized(), k > 1);
        }
    }

    #[test]
    fn row_bytes_checks_blocks_and_overflow() {
        assert_eq!(GgmlType::F32.row_bytes(7), Some(28));
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
        assert_eq!(GgmlType::Q6_K.row_bytes(512), Some(420));
        assert_eq!(GgmlType::Q6_K.row_bytes(128), None);
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX / 2), None);
        assert_eq!(GgmlType::F32.row_bytes(0), Some(0));
    }
}
