//! Proves the real-time forward path never allocates: a counting global allocator is installed
//! and `forward`, `forward_block` and `reset` run on nets covering every layer type (dense,
//! LSTM, GRU, Conv1D with dilation/groups/stride, Conv2D, ConvTranspose1D, BatchNorm 1-D/2-D,
//! PReLU, every activation), with f32 and Q8_0 weights, and on a compile-time-sized net
//! (`kiln_nn::rt::fixed`); and that `forward_block`, which runs blocks of frames layer by
//! layer, gives the bits of frame-by-frame `forward` on all of them.

use kiln_models::rtnet::example::{pipeline, EXAMPLE_SEED};
use kiln_models::rtnet::torch::{self, TorchLayer};
use kiln_models::rtnet::{RtLayer, RtNet};
use kiln_tensor::alloc_count::{count_allocations, CountingAlloc};
use std::collections::BTreeSet;
use std::path::PathBuf;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn models_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/rtneural/models"
    ))
}

fn torch_net(name: &str, spec: TorchLayer) -> RtNet {
    let text = std::fs::read_to_string(models_dir().join(name)).unwrap();
    torch::from_state_dict(&torch::parse(&text).unwrap(), &[spec]).unwrap()
}

fn nets() -> Vec<(String, RtNet)> {
    let mut v: Vec<(String, RtNet)> = [
        "dense.json",
        "lstm.json",
        "gru.json",
        "conv.json",
        "conv2d.json",
        "conv_stateless.json",
        "lstm_torch.json",
        "gru_torch.json",
    ]
    .iter()
    .map(|f| (f.to_string(), RtNet::load(&models_dir().join(f)).unwrap()))
    .collect();
    let p = String::new;
    v.push((
        "convtranspose".into(),
        torch_net(
            "convtranspose1d_torch.json",
            TorchLayer::ConvTranspose1d {
                prefix: p(),
                stride: 3,
                dilation: 1,
            },
        ),
    ));
    v.push((
        "conv stride 3".into(),
        torch_net(
            "conv1d_torch_stride_3.json",
            TorchLayer::Conv1d {
                prefix: p(),
                stride: 3,
                dilation: 1,
                groups: 1,
            },
        ),
    ));
    v.push((
        "conv groups".into(),
        torch_net(
            "conv1d_torch_group_6_3_4_10_3.json",
            TorchLayer::Conv1d {
                prefix: p(),
                stride: 1,
                dilation: 10,
                groups: 3,
            },
        ),
    ));
    for (name, net) in pipeline(EXAMPLE_SEED).unwrap() {
        v.push((format!("{name} q8_0"), net.to_q8_0()));
        v.push((name.to_string(), net));
    }
    v
}

#[test]
fn forward_never_allocates_for_any_layer_type() {
    let mut kinds = BTreeSet::new();
    let mut q8 = false;
    for (name, mut net) in nets() {
        for l in net.layers() {
            kinds.insert(match l {
                RtLayer::Activation(a) => format!("activation:{}", a.activation().name()),
                other => other.kind().to_string(),
            });
            q8 |= l
                .matrices()
                .iter()
                .any(|(_, m)| m.ty() == kiln_quant::QuantType::Q8_0);
        }
        let (ni, no) = (net.in_size(), net.out_size());
        let frames = 64;
        let input: Vec<f32> = (0..frames * ni).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut out = vec![0.0f32; frames * no];
        let (sum, n) = count_allocations(|| {
            net.reset();
            let mut s = 0.0f32;
            for x in input.chunks_exact(ni) {
                s += net.forward(x)[0];
            }
            net.forward_block(&input, &mut out).map(|_| s)
        });
        assert_eq!(n, 0, "{name}: {n} allocations during forward");
        assert!(sum.unwrap().is_finite(), "{name}");
    }
    for k in [
        "dense",
        "lstm",
        "gru",
        "conv1d",
        "conv2d",
        "convtranspose1d",
        "batchnorm",
        "prelu",
        "activation:tanh",
        "activation:relu",
        "activation:sigmoid",
        "activation:softmax",
        "activation:elu",
    ] {
        assert!(kinds.contains(k), "no net covers {k}");
    }
    assert!(q8, "no Q8_0 matrix was exercised");
}

#[test]
fn forward_block_gives_the_bits_of_frame_by_frame_forward() {
    for (name, mut net) in nets() {
        let (ni, no) = (net.in_size(), net.out_size());
        // Not a multiple of the block length, and split over two calls as a host would.
        let frames = 37;
        let input: Vec<f32> = (0..frames * ni).map(|i| (i as f32 * 0.61).cos()).collect();
        net.reset();
        let mut want = Vec::with_capacity(frames * no);
        for x in input.chunks_exact(ni) {
            want.extend_from_slice(net.forward(x));
        }
        net.reset();
        let mut got = vec![f32::NAN; frames * no];
        let (first, rest) = got.split_at_mut(20 * no);
        net.forward_block(&input[..20 * ni], first).unwrap();
        net.forward_block(&input[20 * ni..], rest).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{name}");
        assert_eq!(
            bits(net.output()),
            bits(&want[(frames - 1) * no..]),
            "{name}"
        );
        // Whole frames only.
        assert!(
            net.forward_block(&input[..ni + 1], &mut got).is_err(),
            "{name}"
        );
    }
}

#[test]
fn fixed_size_nets_never_allocate_either() {
    use kiln_models::rtnet::example::single_layer;
    use kiln_nn::rt::fixed::{ActivationT, Conv1dT, DenseT, FixedNet, GruT, LstmT, Seq};
    use kiln_nn::rt::{Activation, ActivationLayer};
    let layer = |kind, i, o, seed| single_layer(kind, i, o, seed).unwrap().layers()[0].clone();
    let layers = [
        layer("dense", 4, 8, 1),
        RtLayer::Activation(ActivationLayer::new(Activation::Tanh, 8)),
        layer("conv1d", 8, 8, 2),
        layer("lstm", 8, 8, 3),
        layer("gru", 8, 4, 4),
    ];
    type Tail = Seq<Conv1dT<8, 8, 7, 1>, Seq<LstmT<8, 8, 32>, GruT<8, 4, 12>>>;
    type Net = Seq<DenseT<4, 8>, Seq<ActivationT<8>, Tail>>;
    let mut net = FixedNet::<Net>::from_layers(&layers).unwrap();
    let (sum, n) = count_allocations(|| {
        net.reset();
        let mut s = 0.0f32;
        for t in 0..1000 {
            let v = (t as f32 * 0.01).sin();
            s += net.forward(&[v, -v, 0.5 * v, 0.25])[0];
        }
        s
    });
    assert_eq!(n, 0, "the fixed net allocated {n} times");
    assert!(sum.is_finite());
}

/// The counter itself works: an allocation inside the closure is seen.
#[test]
fn the_counter_sees_allocations() {
    let (_, n) = count_allocations(|| std::hint::black_box(vec![1u8; 100]));
    assert!(n >= 1);
}
