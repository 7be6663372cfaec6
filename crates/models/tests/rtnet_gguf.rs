//! GGUF storage of real-time nets: every conformance model and the example pipeline survive a
//! round trip bit-exactly in f32, load from F16 and Q8_0 tensors, and the INT8 error report
//! measures what Q8_0 costs.

use kiln_gguf::{GgmlType, GgufFile, GgufWriter};
use kiln_models::rtnet::example::{pipeline, EXAMPLE_SEED};
use kiln_models::rtnet::{gguf, report, RtNet};
use std::path::PathBuf;

fn models_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/rtneural/models"
    ))
}

fn frames(net: &RtNet, n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|t| {
            (0..net.in_size())
                .map(|i| ((t * 31 + i * 7) as f32 * 0.05).sin())
                .collect()
        })
        .collect()
}

fn run(net: &mut RtNet, xs: &[Vec<f32>]) -> Vec<f32> {
    net.reset();
    xs.iter().flat_map(|x| net.forward(x).to_vec()).collect()
}

fn round_trip(net: &RtNet) -> RtNet {
    let mut bytes = Vec::new();
    gguf::to_writer(net).unwrap().write_to(&mut bytes).unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.architecture().unwrap(), "rtnet");
    gguf::from_file(&f).unwrap()
}

#[test]
fn f32_round_trip_is_exact_for_every_conformance_model() {
    for name in [
        "dense.json",
        "lstm.json",
        "gru.json",
        "conv.json",
        "conv2d.json",
        "conv_stateless.json",
        "lstm_torch.json",
        "gru_torch.json",
        "full_model.json",
    ] {
        let mut a = RtNet::load(&models_dir().join(name)).unwrap();
        let mut b = round_trip(&a);
        let xs = frames(&a, 40);
        assert_eq!(run(&mut a, &xs), run(&mut b, &xs), "{name}");

        // INT8: every matrix becomes Q8_0, its rows padded to a 32-block (these nets are
        // narrower than one); the file holds the padded rows and loads to the same net.
        let mut q = a.to_q8_0();
        let mut q2 = round_trip(&q);
        assert_eq!(
            run(&mut q, &xs),
            run(&mut q2, &xs),
            "{name}: Q8_0 round trip"
        );
        for l in q2.layers() {
            for (m, w) in l.matrices() {
                assert_eq!(w.ty(), kiln_quant::QuantType::Q8_0, "{name} {m}");
                assert_eq!(w.stored_cols() % 32, 0, "{name} {m}");
            }
        }
        let rep = report::compare(&a, &q2, &xs).unwrap();
        assert!(rep.output.relative_rms() < 0.1, "{name}: {:?}", rep.output);
    }
}

#[test]
fn example_pipeline_q8_0_stores_loads_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (mut total_f32, mut total_q8) = (0, 0);
    for (name, net) in pipeline(EXAMPLE_SEED).unwrap() {
        let q = net.to_q8_0();
        let path = dir.path().join(format!("{name}.gguf"));
        gguf::save(&q, &path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        // The big matrices are Q8_0, stored as 2-D [in, out].
        let w = f.tensor("l0.weight").unwrap();
        assert_eq!(
            w.dims,
            vec![net.in_size() as u64, net.layers()[0].out_size() as u64]
        );
        assert_eq!(w.ggml_type, GgmlType::Q8_0, "{name}");
        let mut loaded = RtNet::load(&path).unwrap();
        let mut q2 = q.clone();
        let xs = frames(&net, 20);
        assert_eq!(
            run(&mut loaded, &xs),
            run(&mut q2, &xs),
            "{name}: Q8_0 file differs from memory"
        );
        assert!(
            loaded.memory_bytes() < net.memory_bytes(),
            "{name}: INT8 must be smaller"
        );
        (total_f32, total_q8) = (
            total_f32 + net.memory_bytes(),
            total_q8 + loaded.memory_bytes(),
        );
        let rep = report::compare(&net, &loaded, &xs).unwrap();
        assert_eq!(rep.layers.len(), net.layers().len());
        assert!(
            rep.output.max_abs > 0.0,
            "{name}: quantization must change something"
        );
        assert!(rep.output.relative_rms() < 0.1, "{name}: {:?}", rep.output);
    }
    // Q8_0 is 34 bytes per 32 weights against 128: the pipeline shrinks about 3.7x.
    assert!(total_q8 * 3 < total_f32, "{total_q8} vs {total_f32}");
}

#[test]
fn f16_tensors_load() {
    let net = RtNet::load(&models_dir().join("gru.json")).unwrap();
    // Rewrite every tensor as F16 by hand, as an outside converter would.
    let f32_file = {
        let mut bytes = Vec::new();
        gguf::to_writer(&net).unwrap().write_to(&mut bytes).unwrap();
        GgufFile::from_bytes(bytes).unwrap()
    };
    let mut w = GgufWriter::new();
    for (k, v) in f32_file.metadata() {
        w.add_metadata(k.clone(), v.clone());
    }
    for t in f32_file.tensors() {
        let data: Vec<u8> = f32_file
            .tensor_data(t)
            .chunks_exact(4)
            .flat_map(|c| {
                half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
            })
            .collect();
        w.add_tensor(t.name.clone(), GgmlType::F16, &t.dims, data)
            .unwrap();
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    let mut h = gguf::from_file(&GgufFile::from_bytes(bytes).unwrap()).unwrap();
    let mut a = net.clone();
    let xs = frames(&net, 50);
    let (ya, yh) = (run(&mut a, &xs), run(&mut h, &xs));
    let max = ya
        .iter()
        .zip(&yh)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max > 0.0 && max < 1e-2, "f16 error {max}");
}

#[test]
fn wrong_architecture_and_missing_tensors_are_errors() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", kiln_gguf::Value::from("llama"));
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    let e = gguf::from_file(&GgufFile::from_bytes(bytes).unwrap()).unwrap_err();
    assert!(e.to_string().contains("rtnet"), "{e}");

    let net = RtNet::load(&models_dir().join("lstm.json")).unwrap();
    let full = gguf::to_writer(&net).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in full.metadata() {
        w.add_metadata(k.clone(), v.clone());
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    let e = gguf::from_file(&GgufFile::from_bytes(bytes).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer 0 (dense)") && e.contains("l0.weight"),
        "{e}"
    );
}
