//! Properties of the real SmolLM2 tokenizer on arbitrary text: byte-level BPE loses nothing,
//! streaming decodes to the same text, and no input makes encoding fail.

mod common;

use common::smollm2;
use kiln_tokenizer::StreamDecoder;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_decode_round_trip(s in "\\PC{0,64}") {
        let t = smollm2();
        let ids = t.encode(&s, false, false);
        prop_assert_eq!(t.decode(&ids), s);
    }

    #[test]
    fn streaming_equals_decode(s in "[\\PC\u{1F300}-\u{1FAFF}\u{4E00}-\u{4E40}\u{300}-\u{36F} ]{0,48}") {
        let t = smollm2();
        let ids = t.encode(&s, false, true);
        let mut stream = StreamDecoder::new();
        let mut out: String = ids.iter().map(|&i| stream.push(t, i)).collect();
        out.push_str(&stream.finish());
        prop_assert_eq!(&out, &t.decode(&ids));
        prop_assert_eq!(out, s);
    }

    #[test]
    fn arbitrary_ids_decode_without_panic(ids in proptest::collection::vec(any::<u32>(), 0..32)) {
        let t = smollm2();
        let text = t.decode(&ids);
        let mut stream = StreamDecoder::new();
        let mut out: String = ids.iter().map(|&i| stream.push(t, i)).collect();
        out.push_str(&stream.finish());
        prop_assert_eq!(out, text);
    }
}
