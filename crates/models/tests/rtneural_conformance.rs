//! Conformance with RTNeural's reference data (../shared/conformance/rtneural): every model with
//! a reference output reproduces it within the tolerance the data's README gives, streaming one
//! frame per `forward` call; `bad_lstm.json` is rejected naming the layer.

use kiln_models::rtnet::csv::parse_rows;
use kiln_models::rtnet::torch::{self, TorchLayer};
use kiln_models::rtnet::{Activation, RtNet};
use std::path::PathBuf;

/// Named tolerances (absolute), as the conformance README lists them.
const TOL_1E6: f32 = 1e-6;
const TOL_GRU: f32 = 5e-6;
const TOL_CONVT: f32 = 2e-5;
/// `conv_stateless` has a reference but no listed tolerance; long (65-tap) f32 sums.
const TOL_STATELESS: f32 = 1e-5;

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/rtneural"
    ))
}

fn model(name: &str) -> RtNet {
    RtNet::load(&dir().join("models").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn csv(name: &str) -> Vec<Vec<f32>> {
    let text = std::fs::read_to_string(dir().join("test_data").join(name)).unwrap();
    parse_rows(&text).unwrap()
}

fn torch_net(name: &str, spec: &[TorchLayer]) -> RtNet {
    let text = std::fs::read_to_string(dir().join("models").join(name)).unwrap();
    torch::from_state_dict(&torch::parse(&text).unwrap(), spec).unwrap()
}

/// Runs `net` over `frames` and returns every output frame.
fn stream(net: &mut RtNet, frames: &[Vec<f32>]) -> Vec<Vec<f32>> {
    net.reset();
    frames.iter().map(|x| net.forward(x).to_vec()).collect()
}

fn assert_close(what: &str, got: f32, want: f32, tol: f32) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (|diff| {} > {tol})",
        (got - want).abs()
    );
}

/// Sample-in, sample-out models: output frame `t` equals reference row `t`.
#[test]
fn sample_models_match_references() {
    for (file, x, y, tol) in [
        (
            "dense.json",
            "dense_x_python.csv",
            "dense_y_python.csv",
            TOL_1E6,
        ),
        (
            "lstm.json",
            "lstm_x_python.csv",
            "lstm_y_python.csv",
            TOL_1E6,
        ),
        (
            "lstm_1d.json",
            "lstm_1d_x_python.csv",
            "lstm_1d_y_python.csv",
            TOL_1E6,
        ),
        ("gru.json", "gru_x_python.csv", "gru_y_python.csv", TOL_GRU),
        (
            "gru_1d.json",
            "gru_1d_x_python.csv",
            "gru_1d_y_python.csv",
            TOL_1E6,
        ),
        (
            "conv.json",
            "conv_x_python.csv",
            "conv_y_python.csv",
            TOL_1E6,
        ),
        (
            "lstm_torch.json",
            "lstm_torch_x_python.csv",
            "lstm_torch_y_python.csv",
            TOL_1E6,
        ),
        (
            "gru_torch.json",
            "gru_torch_x_python.csv",
            "gru_torch_y_python.csv",
            TOL_1E6,
        ),
    ] {
        let mut net = model(file);
        let (xs, ys) = (csv(x), csv(y));
        assert_eq!(xs.len(), ys.len(), "{file}");
        let out = stream(&mut net, &xs);
        for (t, (o, r)) in out.iter().zip(&ys).enumerate() {
            assert_eq!(o.len(), r.len(), "{file} frame {t}");
            for (a, b) in o.iter().zip(r) {
                assert_close(&format!("{file} frame {t}"), *a, *b, tol);
            }
        }
        // The block form gives the same frames.
        net.reset();
        let flat: Vec<f32> = xs.concat();
        let mut block = vec![0.0; ys.len() * net.out_size()];
        net.forward_block(&flat, &mut block).unwrap();
        assert_eq!(block, out.concat(), "{file}: block form differs");
    }
}

/// Keras "valid" convolutions over a 128-sample block: the causal stream's last 16 outputs.
#[test]
fn conv_stateless_matches_reference_tail() {
    let mut net = model("conv_stateless.json");
    let (xs, ys) = (
        csv("conv_stateless_x_python.csv"),
        csv("conv_stateless_y_python.csv"),
    );
    let out = stream(&mut net, &xs);
    let skip = xs.len() - ys.len();
    for (n, r) in ys.iter().enumerate() {
        assert_close(
            &format!("conv_stateless {n}"),
            out[skip + n][0],
            r[0],
            TOL_STATELESS,
        );
    }
}

/// Conv2D: 50 frames of 23 features in; Keras frame f equals streaming frame f + 13
/// (receptive field 15, one frame of "same" time padding), for the frames that see no padding.
#[test]
fn conv2d_matches_reference_on_valid_frames() {
    let mut net = model("conv2d.json");
    let x = csv("conv2d_x_python.csv").concat();
    let y = csv("conv2d_y_python.csv").concat();
    let frames: Vec<Vec<f32>> = x.chunks(23).map(|c| c.to_vec()).collect();
    assert_eq!((frames.len(), net.out_size()), (50, 8));
    let out = stream(&mut net, &frames);
    for f in 1..=36 {
        for k in 0..8 {
            assert_close(
                &format!("conv2d frame {f} feature {k}"),
                out[f + 13][k],
                y[f * 8 + k],
                TOL_1E6,
            );
        }
    }
}

/// Checks a torch "valid" conv reference (`channels × time`) against stream frames: column `n`
/// equals output frame `n + offset`.
fn check_columns(what: &str, out: &[Vec<f32>], y: &[Vec<f32>], offset: usize, tol: f32) {
    for (ch, row) in y.iter().enumerate() {
        for (n, &want) in row.iter().enumerate() {
            assert_close(
                &format!("{what} ch {ch} col {n}"),
                out[n + offset][ch],
                want,
                tol,
            );
        }
    }
}

#[test]
fn torch_conv1d_plain_and_strided() {
    let mut net = model("conv1d_torch.json");
    let xs = csv("conv1d_torch_x_python.csv");
    check_columns(
        "conv1d",
        &stream(&mut net, &xs),
        &csv("conv1d_torch_y_python.csv"),
        4,
        TOL_1E6,
    );

    let spec = [TorchLayer::Conv1d {
        prefix: String::new(),
        stride: 3,
        dilation: 1,
        groups: 1,
    }];
    let mut net = torch_net("conv1d_torch_stride_3.json", &spec);
    // Two leading zeros align the reference columns (windows starting at 3n) with the frames
    // the strided layer computes (multiples of 3); they fall outside every compared window.
    let mut xs = vec![vec![0.0], vec![0.0]];
    xs.extend(csv("conv1d_torch_x_python_stride_3.csv"));
    let out = stream(&mut net, &xs);
    let y = csv("conv1d_torch_y_python_stride_3.csv");
    for (ch, row) in y.iter().enumerate() {
        for (n, &want) in row.iter().enumerate() {
            assert_close(
                &format!("stride 3 ch {ch} col {n}"),
                out[3 * n + 6][ch],
                want,
                TOL_1E6,
            );
        }
    }
}

#[test]
fn torch_conv1d_groups_and_dilation() {
    let xs = csv("conv1d_torch_group_x_python.csv");
    for (cfg, k, d, g) in [
        ("6_3_3_1_3", 3, 1, 3),
        ("6_3_4_10_3", 4, 10, 3),
        ("6_6_1_1_6", 1, 1, 6),
    ] {
        let spec = [TorchLayer::Conv1d {
            prefix: String::new(),
            stride: 1,
            dilation: d,
            groups: g,
        }];
        let mut net = torch_net(&format!("conv1d_torch_group_{cfg}.json"), &spec);
        let y = csv(&format!("conv1d_torch_group_y_python_{cfg}.csv"));
        check_columns(cfg, &stream(&mut net, &xs), &y, d * (k - 1), TOL_1E6);
    }
}

#[test]
fn torch_conv_transpose1d() {
    // The plain reference applies padding 3 (drops the first 3 frames); the `_cc` one keeps
    // the output from frame 0.
    for (sfx, offset) in [("", 3), ("_cc", 0)] {
        let spec = [TorchLayer::ConvTranspose1d {
            prefix: String::new(),
            stride: 3,
            dilation: 1,
        }];
        let mut net = torch_net("convtranspose1d_torch.json", &spec);
        let x = csv(&format!("convtranspose1d_torch_x_python{sfx}.csv"));
        let frames: Vec<Vec<f32>> = (0..x[0].len())
            .map(|t| x.iter().map(|r| r[t]).collect())
            .collect();
        // Each input emits 3 output frames of 15.
        let out: Vec<Vec<f32>> = stream(&mut net, &frames)
            .concat()
            .chunks(15)
            .map(|c| c.to_vec())
            .collect();
        check_columns(
            "convtranspose1d",
            &out,
            &csv(&format!("convtranspose1d_torch_y_python{sfx}.csv")),
            offset,
            TOL_CONVT,
        );
    }
}

/// The microTCN block: PReLU(BN(Conv1d k4 d10 (x))) + Conv1d k1 (x), causally cropped.
#[test]
fn torch_microtcn_block() {
    let load = |f: &str, spec: TorchLayer| torch_net(&format!("microtcn/{f}.json"), &[spec]);
    let p = String::new;
    let mut conv = load(
        "conv1",
        TorchLayer::Conv1d {
            prefix: p(),
            stride: 1,
            dilation: 10,
            groups: 1,
        },
    );
    let mut bn = {
        let text = std::fs::read_to_string(dir().join("models/microtcn/bn.json")).unwrap();
        let obj = torch::parse(&text).unwrap();
        torch::from_state_dict(
            &obj,
            &[TorchLayer::BatchNorm1d {
                prefix: p(),
                eps: 1e-5,
            }],
        )
        .unwrap()
    };
    let mut act = load("relu", TorchLayer::PRelu { prefix: p() });
    let mut res = load(
        "res",
        TorchLayer::Conv1d {
            prefix: p(),
            stride: 1,
            dilation: 1,
            groups: 1,
        },
    );
    let xs = csv("microtcn_x.csv");
    let out: Vec<Vec<f32>> = xs
        .iter()
        .map(|x| {
            let h = conv.forward(x).to_vec();
            let h = bn.forward(&h).to_vec();
            let h = act.forward(&h).to_vec();
            h.iter().zip(res.forward(x)).map(|(a, b)| a + b).collect()
        })
        .collect();
    check_columns("microtcn", &out, &csv("microtcn_y.csv"), 30, TOL_1E6);
}

#[test]
fn bad_lstm_is_rejected_naming_the_layer() {
    let err = RtNet::load(&dir().join("models/bad_lstm.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (lstm)") && err.contains("16") && err.contains("20"),
        "{err}"
    );
}

/// full_model.json has no reference output: it must load and give finite, stateful output.
#[test]
fn full_model_loads_and_runs() {
    let mut net = model("full_model.json");
    let xs = csv("dense_x_python.csv");
    let a = stream(&mut net, &xs);
    let b = stream(&mut net, &xs);
    assert_eq!(a, b, "reset must restore the initial state");
    assert!(a.iter().flatten().all(|v| v.is_finite()));
    let _ = Activation::Tanh;
}
